#!/usr/bin/env python3
"""Azure Storage's CRC64, bit at a time, from its definition alone.

An independent reference for custody's CRC64 (docs/manifest.md): reflected
polynomial 0x9A6C9329AC4BC9B5 (Microsoft's Azure Storage SDKs and the Data
Box samples use this constant), initial value and final XOR all ones. No
table, no library: slow, and easy to check by eye.

    crc64_reference.py FILE...   prints "<16 lowercase hex>  <size>  FILE"
    crc64_reference.py --vectors prints the vectors pinned in src/digest.rs
"""
import sys

POLY = 0x9A6C9329AC4BC9B5
MASK = (1 << 64) - 1


def crc64(data: bytes) -> int:
    crc = MASK
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ POLY if crc & 1 else crc >> 1
    return crc ^ MASK


def main(args):
    if args == ["--vectors"]:
        for name, data in [("empty", b""), ("123456789", b"123456789"), ("a", b"a"),
                           ("4096 zero bytes", bytes(4096))]:
            print(f"{crc64(data):016x}  {name}")
        return
    for path in args:
        with open(path, "rb") as f:
            data = f.read()
        print(f"{crc64(data):016x}  {len(data)}  {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
