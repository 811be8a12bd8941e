"""A pure-Python ``dfu-suffix -v VID -p PID -a FILE`` (dfu-util's tool) for OrangeCrab builds.

amaranth-boards' OrangeCrab platform appends a USB DFU suffix to the bitstream so its bootloader
accepts it; ``dfu-suffix`` ships with dfu-util, a system package, so the pip-only flow brings its own.
Format (USB DFU 1.1, Table B-1): bcdDevice, idProduct, idVendor, bcdDFU = 0x0100, "UFD", bLength = 16
(all little-endian, in file order), then dwCRC: the CRC-32 of the whole file except these last 4 bytes,
as dfu-util computes it (reflected 0xEDB88320, initial 0xFFFFFFFF, no final inversion).
"""
from __future__ import annotations

import argparse
import struct
import sys
import zlib
from pathlib import Path

SUFFIX_LENGTH = 16


def dfu_suffix(data: bytes, vid: int, pid: int, did: int = 0xFFFF) -> bytes:
    """``data`` with a DFU 1.0 suffix appended."""
    body = data + struct.pack("<HHHH3sB", did, pid, vid, 0x0100, b"UFD", SUFFIX_LENGTH)
    crc = zlib.crc32(body) ^ 0xFFFFFFFF
    return body + struct.pack("<I", crc)


def has_suffix(data: bytes) -> bool:
    return len(data) >= SUFFIX_LENGTH and data[-8:-5] == b"UFD" and data[-5] == SUFFIX_LENGTH \
        and struct.unpack("<I", data[-4:])[0] == zlib.crc32(data[:-4]) ^ 0xFFFFFFFF


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="dfu-suffix", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--vid", type=lambda t: int(t, 16), required=True)
    p.add_argument("-p", "--pid", type=lambda t: int(t, 16), required=True)
    p.add_argument("-d", "--did", type=lambda t: int(t, 16), default=0xFFFF)
    p.add_argument("-a", "--add", metavar="FILE", required=True)
    args = p.parse_args(argv)
    path = Path(args.add)
    data = path.read_bytes()
    if has_suffix(data):
        print(f"dfu-suffix: {path} already has a DFU suffix", file=sys.stderr)
        return 1
    path.write_bytes(dfu_suffix(data, args.vid, args.pid, args.did))
    return 0


if __name__ == "__main__":
    sys.exit(main())
