"""The performance model's SASS reading (``dcsd.kernels.offline_compile.SassProfile``), checked
against counts made independently of the parser, on SASS the real compiler produced.

``data/row_sum_sm90.sass`` is ``cuobjdump -sass`` of this kernel, compiled by triton 3.8 for sm_90
with ``num_warps=1``, ``BLOCK=256``, x and out 16-divisible:

    @triton.jit
    def row_sum(x_ptr, scale_ptr, out_ptr, rows, BLOCK: tl.constexpr):
        offs = tl.arange(0, BLOCK)
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for row in tl.range(rows, loop_unroll_factor=1, num_stages=1):
            acc += tl.load(x_ptr + row * BLOCK + offs)  # fp32: two 128-bit loads per thread
        scale = tl.load(scale_ptr).to(tl.float32)  # one bf16: a 16-bit load
        tl.store(out_ptr + offs, acc * scale)

ptxas unrolled the row loop 4x and left a 2x block and a 1x loop for the remainder, so the SASS
has two backward branches and 17 global loads, one of them scalar.
"""

from __future__ import annotations

import re
from pathlib import Path

from dcsd.kernels.offline_compile import SassProfile, load_bits, parse_sass

SASS = (Path(__file__).parent / "data" / "row_sum_sm90.sass").read_text()
# Independent of the parser: every instruction line is "/*address*/ ... ;", NOPs are padding and
# "BRA <own address>" is the trap loop after EXIT.
ADDRESSED = re.findall(r"^\s*/\*([0-9a-f]{4})\*/\s+(.*?)\s*;", SASS, flags=re.M)
INSTRUCTIONS = [
    (int(address, 16), text)
    for address, text in ADDRESSED
    if text != "NOP" and text != f"BRA 0x{address.lstrip('0') or '0'}"
]


def backward_branches() -> list[tuple[int, int]]:
    loops = []
    for address, text in INSTRUCTIONS:
        found = re.search(r"BRA 0x([0-9a-f]+)$", text)
        if found and int(found.group(1), 16) < address:
            loops.append((int(found.group(1), 16), address))
    return loops


def test_parse_counts_every_instruction_once() -> None:
    profile = SassProfile.from_sass(SASS, loop_trips=1, element_bytes=4)
    # EXIT at 0xc00 ends the code: 0xc00 / 16 + 1 instructions, none of them a NOP.
    assert profile.static == len(INSTRUCTIONS) == 0xC00 // 16 + 1
    assert profile.issued == profile.static
    assert len(parse_sass(SASS)) == profile.static + 1  # + the trap branch


def test_loops_and_loads_match_the_kernel() -> None:
    profile = SassProfile.from_sass(SASS, loop_trips=1, element_bytes=4)
    assert backward_branches() == [(0x330, 0x720), (0x9D0, 0xAF0)]
    assert profile.loops == 2
    assert profile.global_loads == sum("LDG" in text for _, text in INSTRUCTIONS) == 17
    # 16 LDG.E.128 of the fp32 rows; the bf16 scale is one LDG.E.U16.
    assert profile.vector_loads == 16
    assert profile.barriers == profile.shuffles == 0


def test_loop_bodies_count_once_per_trip() -> None:
    trips = 5
    profile = SassProfile.from_sass(SASS, loop_trips=trips, element_bytes=4)
    # Instructions are 16 bytes apart; each body runs `trips` times instead of once.
    bodies = sum((end - start) // 16 + 1 for start, end in backward_branches())
    assert bodies == 64 + 19
    assert profile.issued == len(INSTRUCTIONS) + (trips - 1) * bodies
    # 8 LDG.E.128 in the 4x-unrolled body, 2 in the remainder loop.
    assert profile.global_loads == 17 + (trips - 1) * 10


def test_load_widths() -> None:
    assert [load_bits(m) for m in (".E.U16", ".E", ".E.64", ".E.128", ".E.S8")] == [
        16,
        32,
        64,
        128,
        8,
    ]
