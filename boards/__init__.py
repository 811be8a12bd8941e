"""FPGA boards: self-test tops, the YoWASP build flow, fit check, reports and the FPGA sweep.

Modules: :mod:`.platforms` (supported boards), :mod:`.devices` (device resources), :mod:`.selftest`
(on-board self-test and board top), :mod:`.fit` (memory fit check), :mod:`.toolchain` (YoWASP tools,
build runner), :mod:`.synth` (yosys-only synthesis of any component), :mod:`.report` (nextpnr / yosys
reports), :mod:`.build` (``sparsyn build``), :mod:`.bench` (``sparsyn bench --fpga``).
"""
