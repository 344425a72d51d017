#!/usr/bin/env python3
"""Zero the device code of libcusparseLt.so that a Hopper GPU (sm_90) never loads, so that a
cuSPARSELt release compresses small enough to be carried to the GPU machine (the device tool's
64 MiB limit; the full library is ~230 MB and compresses only to ~150 MB).

Every fatbin in the .nv_fatbin and .cask_resource sections is a list of entries (PTX or cubin, one
architecture each). On an sm_90 device the CUDA loader uses the sm_90 cubin; every other entry's
payload is overwritten with zeros, headers kept, so offsets and sizes stay valid and the file
still loads. Kernels that exist only as PTX or for other architectures become unavailable on
sm_90 (the loader would have JIT-compiled them from PTX); a run that needed one would fail with
a CUDA "no kernel image" error rather than silently differ.

usage: strip_cusparselt_sm90.py IN_LIB OUT_LIB
"""
import struct
import sys

FATBIN_MAGIC = struct.pack('<I', 0xBA55ED50)
KIND_CUBIN = 2
KEEP_ARCH = 90


def sections(data):
    """{name: (file offset, size)} from the ELF64 section headers."""
    shoff, = struct.unpack_from('<Q', data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from('<HHH', data, 0x3A)
    headers = [struct.unpack_from('<IIQQQQ', data, shoff + i * shentsize) for i in range(shnum)]
    strtab = headers[shstrndx][4]
    found = {}
    for name_off, _, _, _, offset, size in headers:
        name = bytes(data[strtab + name_off:data.index(b'\0', strtab + name_off)]).decode()
        found[name] = (offset, size)
    return found


def main(src, dst):
    data = bytearray(open(src, 'rb').read())
    kept = zeroed = 0
    for name, (off, size) in sections(data).items():
        if name not in ('.nv_fatbin', '.cask_resource'):
            continue
        pos = off
        while True:
            i = data.find(FATBIN_MAGIC, pos, off + size)
            if i < 0:
                break
            version, header, fat_size = struct.unpack_from('<HHQ', data, i + 4)
            if version != 1 or header != 16:
                pos = i + 4
                continue
            e, end = i + header, i + header + fat_size
            while e < end:
                kind, _, entry_header, payload = struct.unpack_from('<HHIQ', data, e)
                arch = struct.unpack_from('<I', data, e + 28)[0]
                start = e + entry_header
                if kind == KIND_CUBIN and arch == KEEP_ARCH:
                    kept += payload
                else:
                    data[start:start + payload] = bytes(payload)
                    zeroed += payload
                e = start + payload
            pos = end
    open(dst, 'wb').write(data)
    print(f'{src}: kept {kept} bytes of sm_{KEEP_ARCH} cubins, zeroed {zeroed} bytes of other device code')


if __name__ == '__main__':
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
