from tinydyn.cli import main

main()
