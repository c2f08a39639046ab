"""The ggml-cpu edit of the repacked-weight GEMMs: fewer passes over the weights, and a
direct VNNI dot product for Q4_0.

llama.cpp's CPU backend repacks Q4_0, IQ4_NL and Q4_K weights at load (the ``CPU_REPACK``
buffer type) so that one AVX-512 instruction works on 16 weight rows at once. Their GEMMs
(``ggml/src/ggml-cpu/arch/x86/repack.cpp``) take the batch's rows (tokens) four at a time
(one quantized ``block_q8_0x4`` / ``block_q8_Kx4``) and, in the AVX-512 path, sixteen at a
time: for each 16-row group they sweep the whole weight matrix, unpacking each weight block
from nibbles to bytes once for the group's 16 rows. Rows left over after the last whole 16
went through a second loop four rows at a time, each of those sweeping the weights and
unpacking every block again. A decode step of 8 sequences (8 rows) therefore unpacked every
weight twice and read the weights twice, and a 63-row mixed pass ran 3 x 16, then 3 x 4.

**Row groups** (``pl_row_groups_512``, ``_256``). The 16-row loop stays; after it, a copy of
it over NG groups of four rows, NG a compile-time constant (3, 2, then 1, each at most once),
takes the 12, 8 or 4 rows left in one sweep. Each output value's arithmetic is the stock
arithmetic for its row (the same integer dot products, the same fp32 scale and fused
multiply-add in the same block order), so results are bit-identical to stock's at any row
count; only the order in which output tiles are computed changes.

**Q4_0 with VNNI** (``pl_dot``). Stock multiplies signed 4-bit weights by signed 8-bit
activations with ``mul_sum_i8_pairs_acc_int32x16``: the activation's absolute value, its sign
moved onto the weight (a mask and a masked subtract), then ``vpdpbusd``. Where the CPU has
AVX512-VNNI, the Q4_0 weights are unpacked as unsigned values (value + 8, 0..15) and go
straight into ``vpdpbusd`` against the signed activations; 8 x each activation row's sum over
the block (four more ``vpdpbusd`` per row group and block) is taken off. Integer arithmetic is
exact, so the dot products are the same integers and the results the same bits
(``tests/test_llama_cpp_repack.py`` compares the kernel with numpy and with ggml's scalar
reference, and checks that a row's bits do not depend on the rows beside it; the suite's
invariance tests run the whole model).

The AVX2 path (CPUs without AVX-512 BW and DQ; on others, the weight rows past the last
whole 16) gets the row groups too; the VNNI dot is in the AVX-512 path only. The row-group
copy is a lambda kept out of line (``noinline``): inlined, its three instances changed how
the untouched 16-row loop compiled, 1.5-2.5 % slower at 64 rows (Q4_K, measured both ways).
"""

from __future__ import annotations

from pathlib import Path

REPACK = Path("ggml") / "src" / "ggml-cpu" / "arch" / "x86" / "repack.cpp"

MARK = "pl_row_groups"

# The GEMMs edited: (the start of the function's definition, whether the Q4_0 VNNI dot
# applies). gemm_q4_b32_8x8_q8_0_lut_avx serves Q4_0, IQ4_NL and MXFP4 (a template).
FUNCTIONS = (
    ("static void gemm_q4_b32_8x8_q8_0_lut_avx(", True),
    ("void ggml_gemm_q4_K_8x8_q8_K(", False),
)

MAIN_LOOP = "    for (; y < anr / 4; y += 4) {\n"
# Each GEMM's two paths: (what precedes its loops, its vector width). The AVX2 path also
# takes, on an AVX-512 CPU, the weight rows left after whole 16s.
PATHS = (
    ("#if defined(__AVX512BW__) && defined(__AVX512DQ__)\n", 512),
    ("#endif // __AVX512BW__ && __AVX512DQ__\n", 256),
)
GROUPS_OPEN = """\
    // prometheus-lite (kernels/llama_cpp/repack_patch.py): the rows left after the 16-row
    // loop, 12, 8 or 4, in one sweep over the weights as NG groups of four (stock: one sweep
    // per 4 rows); each weight block is unpacked once for all of them. Same bits as stock.
    auto pl_row_groups_{w} = [&](auto ng_c) __attribute__((noinline)) {{
    constexpr int NG = decltype(ng_c)::value;
    for (; y + NG <= nr / 4; y += NG) {{
"""
RP_LOOP = "for (int rp = 0; rp < 4; rp++) {\n"
RP_LOOP_NEW = "for (int rp = 0; rp < NG; rp++) {\n"
STORE_LOOP = """\
            for (int i = 0; i < 16; i++) {{
                _mm{w}_storeu_ps("""
STORE_LOOP_NEW = """\
            for (int i = 0; i < NG * 4; i++) {{
                _mm{w}_storeu_ps("""
REST_LOOP = "    for (; y < nr / 4; y"
LOOP_END = "\n    }\n"
GROUPS_CLOSE = """\
    }};
    pl_row_groups_{w}(std::integral_constant<int, 3>{{}});
    pl_row_groups_{w}(std::integral_constant<int, 2>{{}});
    pl_row_groups_{w}(std::integral_constant<int, 1>{{}});

"""

# --- Q4_0 with VNNI: unsigned weights into vpdpbusd, less 8 x the activations' sum --------
LUT_LINE = (
    "    __m512i signextendlutexpanded = _mm512_inserti32x8("
    "_mm512_castsi256_si512(signextendlut), signextendlut, 1);\n"
)
VNNI_SETUP = """\
    // prometheus-lite: Q4_0 with VNNI takes its weights unsigned (value + 8) straight into
    // vpdpbusd against the signed activations, then subtracts 8 x each row's sum; the same
    // integers as the sign-transfer product below, so the same bits.
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    constexpr bool pl_vnni = std::is_same_v<block_tx8, block_q4_0x8>;
#else
    constexpr bool pl_vnni = false;
#endif
    const __m512i pl_lut = pl_vnni ? _mm512_add_epi8(signextendlutexpanded, _mm512_set1_epi8(8))
                                   : signextendlutexpanded;
    auto pl_dot = [](__m512i acc, __m512i x, __m512i y) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
        if constexpr (pl_vnni) {
            return _mm512_dpbusd_epi32(acc, y, x);
        }
#endif
        return mul_sum_i8_pairs_acc_int32x16(acc, x, y);
    };
"""
LUT_USE = "_mm512_shuffle_epi8(signextendlutexpanded, "
LUT_USES = 8
DOT = "mul_sum_i8_pairs_acc_int32x16("
DOTS = 32
SUMS_ANCHOR = (
    "                    __m512i iacc_mat_11 = "
    "_mm512_add_epi32(iacc_mat_11_sp1, iacc_mat_11_sp2);\n"
)
SUMS = """\
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
                    if constexpr (pl_vnni) {
                        // 8 x each row's sum over the block, lanes [s0 s0 s1 s1 s2 s2 s3 s3]: the
                        // rows' 8-byte chunks interleave A0 A1 A2 A3 in each 32-byte load
                        const __m256i ones = _mm256_set1_epi8(1);
                        __m256i rs = _mm256_setzero_si256();
                        rs = _mm256_dpbusd_epi32(rs, ones, lhs_mat_ymm_0123_0);
                        rs = _mm256_dpbusd_epi32(rs, ones, lhs_mat_ymm_0123_1);
                        rs = _mm256_dpbusd_epi32(rs, ones, lhs_mat_ymm_0123_2);
                        rs = _mm256_dpbusd_epi32(rs, ones, lhs_mat_ymm_0123_3);
                        rs = _mm256_add_epi32(rs, _mm256_shuffle_epi32(rs, 0xB1));
                        rs = _mm256_slli_epi32(rs, 3);
                        // iacc_mat_00/01: rows 0, 1 in lanes [A0 A0 A1 A1] x 4; 10/11: rows 2, 3
                        const __m512i c01 =
                            _mm512_broadcast_i32x4(_mm256_castsi256_si128(rs));
                        const __m512i c23 =
                            _mm512_broadcast_i32x4(_mm256_extracti128_si256(rs, 1));
                        iacc_mat_00 = _mm512_sub_epi32(iacc_mat_00, c01);
                        iacc_mat_01 = _mm512_sub_epi32(iacc_mat_01, c01);
                        iacc_mat_10 = _mm512_sub_epi32(iacc_mat_10, c23);
                        iacc_mat_11 = _mm512_sub_epi32(iacc_mat_11, c23);
                    }
#endif
"""


def _stop(where: Path, what: str) -> None:
    raise SystemExit(
        f"{where}: {what}; this edit is for the llama.cpp vendored by llama-cpp-python 0.3.36"
    )


def _find(text: str, needle: str, start: int, end: int, where: Path, what: str) -> int:
    i = text.find(needle, start, end)
    if i < 0:
        _stop(where, f"{what} not found")
    return i


def _count(text: str, needle: str, want: int, where: Path, what: str) -> None:
    n = text.count(needle)
    if n != want:
        _stop(where, f"{what} occurs {n} times (expected {want})")


def edit_path(text: str, f: int, marker: str, width: int, vnni: bool, where: Path) -> str:
    """``text`` with the loops after ``marker`` (the first after ``f``) edited."""
    start = _find(text, marker, f, len(text), where, f"the {width}-bit path")
    loop = _find(text, MAIN_LOOP, start, len(text), where, "its 16-row loop")
    rest = _find(text, REST_LOOP, loop, len(text), where, "its 4-row loop")
    body = text[loop + len(MAIN_LOOP) : rest]
    store, store_new = STORE_LOOP.format(w=width), STORE_LOOP_NEW.format(w=width)
    _count(body, RP_LOOP, 1, where, "the loop over 4-row groups")
    _count(body, store, 1, where, "the 16-row store")
    before = text[:loop]
    if vnni:
        _count(before[f:], LUT_LINE, 1, where, "the nibble table")
        _count(body, LUT_USE, LUT_USES, where, "the nibble table's uses")
        _count(body, DOT, DOTS, where, "the signed dot products")
        _count(body, SUMS_ANCHOR, 1, where, "the block's sums")
        before = before[:f] + before[f:].replace(LUT_LINE, LUT_LINE + VNNI_SETUP)
        body = (body.replace(LUT_USE, "_mm512_shuffle_epi8(pl_lut, ")
                .replace(DOT, "pl_dot(")
                .replace(SUMS_ANCHOR, SUMS_ANCHOR + SUMS))
    close = body.rindex(LOOP_END) + len(LOOP_END)  # the 16-row loop's closing brace
    # The 16-row loop stays as it is (turned into the NG loop with NG = 4, it compiled 2-3 %
    # slower at 64 rows); a copy of it for NG groups of four takes the 12, 8 or 4 rows left.
    groups = body[:close].replace(RP_LOOP, RP_LOOP_NEW).replace(store, store_new)
    return (before + MAIN_LOOP + body[:close] + GROUPS_OPEN.format(w=width) + groups
            + GROUPS_CLOSE.format(w=width) + body[close:] + text[rest:])


def edit_function(text: str, head: str, vnni: bool, where: Path) -> str:
    """``text`` with both paths of the GEMM that starts at ``head`` edited (the Q4_0 dot:
    the AVX-512 path only)."""
    _count(text, head, 1, where, f"{head!r}")
    for marker, width in PATHS:
        text = edit_path(text, text.index(head), marker, width, vnni and width == 512, where)
    return text


def apply(llama_cpp_dir: Path) -> None:
    """Edit ``repack.cpp`` under ``llama_cpp_dir`` (vendor/llama.cpp of the sdist) in place."""
    path = Path(llama_cpp_dir) / REPACK
    text = path.read_text()
    if MARK in text:
        raise SystemExit(f"{path} is already patched")
    for head, vnni in FUNCTIONS:
        text = edit_function(text, head, vnni, path)
    path.write_text(text)
