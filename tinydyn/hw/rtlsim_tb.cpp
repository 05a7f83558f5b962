// AXI-stream testbench for one finn-plus RTL layer under Verilator (tinydyn.hw.rtlsim).
//
// The layer is compiled with `--prefix Vdut`; its ports are FINN's: ap_clk, ap_rst_n (and
// ap_clk2x where the layer has one), in0_V_{TDATA,TVALID,TREADY}, out0_V_{TDATA,TVALID,TREADY}.
// Stream words travel as hexadecimal lines, one word per line, exactly the strings finn-plus's
// own XSI simulator exchanges (finn_xsi.adapter.rtlsim_multi_io), so finn-plus packs and unpacks
// them. Random stalls on both sides (TVALID low at the input, TREADY low at the output) exercise
// the back-pressure paths a real pipeline uses.
//
// usage: Vdut IN.hex OUT.hex N_OUT SEED LIVENESS
// Runs until N_OUT words came out and every input word was taken (a strided sliding window may
// finish its output before it has read the last rows); a word beyond N_OUT counts as extra.
// exit 0: done; 3: no stream moved for LIVENESS cycles (the layer hung).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "Vdut.h"
#include "verilated.h"

using Chunks = std::vector<uint32_t>;  // a stream word, 32-bit chunks, least significant first

static Chunks parse_hex(const std::string& text) {
    Chunks out;
    for (size_t end = text.size(); end > 0;) {
        size_t begin = end >= 8 ? end - 8 : 0;
        out.push_back(static_cast<uint32_t>(std::stoul(text.substr(begin, end - begin), nullptr, 16)));
        end = begin;
    }
    return out;
}

static std::string to_hex(const Chunks& word) {
    std::string text;
    char buf[9];
    for (size_t i = word.size(); i-- > 0;) {
        std::snprintf(buf, sizeof buf, text.empty() ? "%x" : "%08x", word[i]);
        text += buf;
    }
    return text.empty() ? "0" : text;
}

// ports of up to 64 bits are plain integers, wider ones VlWide<N> (32-bit words)
template <typename T>
static void put(T& port, const Chunks& w) {
    uint64_t v = w.empty() ? 0 : w[0];
    if (sizeof(T) > 4 && w.size() > 1) v |= static_cast<uint64_t>(w[1]) << 32;
    port = static_cast<T>(v);
}
template <std::size_t N>
static void put(VlWide<N>& port, const Chunks& w) {
    for (std::size_t i = 0; i < N; ++i) port[i] = i < w.size() ? w[i] : 0;
}
template <typename T>
static Chunks get(const T& port) {
    uint64_t v = static_cast<uint64_t>(port);
    return sizeof(T) > 4 ? Chunks{static_cast<uint32_t>(v), static_cast<uint32_t>(v >> 32)}
                         : Chunks{static_cast<uint32_t>(v)};
}
template <std::size_t N>
static Chunks get(const VlWide<N>& port) {
    Chunks w(N);
    for (std::size_t i = 0; i < N; ++i) w[i] = port[i];
    return w;
}

template <typename Top>  // a template, so that a layer without ap_clk2x still compiles
static void set_clocks(Top* top, int level) {
    top->ap_clk = level;
    if constexpr (requires { top->ap_clk2x; }) top->ap_clk2x = level;  // same phase: a 1x design
}

int main(int argc, char** argv) {
    if (argc != 6) {
        std::cerr << "usage: " << argv[0] << " IN.hex OUT.hex N_OUT SEED LIVENESS\n";
        return 2;
    }
    std::vector<Chunks> in;
    std::ifstream in_file(argv[1]);
    for (std::string line; std::getline(in_file, line);)
        if (!line.empty()) in.push_back(parse_hex(line));
    const long n_out = std::atol(argv[3]);
    std::mt19937 rng(static_cast<unsigned>(std::atol(argv[4])));
    const long liveness = std::atol(argv[5]);
    std::bernoulli_distribution stall(0.25);

    auto* ctx = new VerilatedContext;
    auto* top = new Vdut{ctx};
    top->ap_rst_n = 0;
    top->in0_V_TVALID = 0;
    top->out0_V_TREADY = 0;
    for (int i = 0; i < 16; ++i) {
        set_clocks(top, 0);
        top->eval();
        set_clocks(top, 1);
        top->eval();
    }
    top->ap_rst_n = 1;

    std::ofstream out_file(argv[2]);
    size_t next_in = 0;
    long collected = 0, extra = 0, cycles = 0, idle = 0;
    while (collected < n_out || next_in < in.size()) {
        set_clocks(top, 0);
        const bool offer = next_in < in.size() && !stall(rng);
        top->in0_V_TVALID = offer;
        if (offer) put(top->in0_V_TDATA, in[next_in]);
        top->out0_V_TREADY = !stall(rng);
        top->eval();  // settle the combinational handshake before the rising edge samples it
        const bool in_fire = offer && top->in0_V_TREADY;
        const bool out_fire = top->out0_V_TVALID && top->out0_V_TREADY;
        if (out_fire && collected < n_out) {
            out_file << to_hex(get(top->out0_V_TDATA)) << '\n';
            ++collected;
        } else if (out_fire) {
            ++extra;
        }
        idle = (in_fire || out_fire) ? 0 : idle + 1;
        if (idle > liveness) {
            std::cerr << "rtlsim: no stream moved for " << liveness << " cycles after " << collected << " of "
                      << n_out << " output words (" << next_in << " of " << in.size() << " input words taken)\n";
            return 3;
        }
        set_clocks(top, 1);
        top->eval();
        next_in += in_fire;
        ++cycles;
    }
    std::cout << "cycles " << cycles << " inputs_taken " << next_in << " inputs " << in.size() << " extra_outputs "
              << extra << "\n";
    top->final();
    delete top;
    delete ctx;
    return 0;
}
