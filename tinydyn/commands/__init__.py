"""The click commands that start from what a user hands tinydyn (a checkpoint or an IR
directory): the top floor, above host/ and codegen/, which stay torch-free."""
