#!/usr/bin/env python3
"""Bytes per crate of an unstripped binary, from its symbol table, as a
markdown table; with two binaries, before/after and the change.

Usage: size-by-crate.py BIN [BIN2]   (scripts/bench/size.sh runs it)

Each function's size (llvm-nm -S, one symbol per address) goes to the
crate its demangled path starts with: `<tokio::x::Y as Trait>::f` to
tokio, `drop_in_place<T>` to T's crate, core/alloc/std to std, C and
assembly symbols (musl, compiler-rt, ring's asm) to one row. Generic code
counts for the crate that defines it, as cargo-bloat does. The section
rows (llvm-size -A) show what is not code: strings and tables in .rodata,
vtables in .data.rel.ro, unwind tables in .eh_frame."""
import re, subprocess, sys, collections

ESC = {'$LT$': '<', '$GT$': '>', '$u20$': ' ', '$C$': ',', '$RF$': '&', '$BP$': '*',
       '$u7b$': '{', '$u7d$': '}', '$u5b$': '[', '$u5d$': ']', '$u27$': "'", '$LP$': '(', '$RP$': ')',
       '$u3b$': ';', '$u21$': '!', '$u22$': '"', '$u2b$': '+', '$u3d$': '='}

def syms(path):
    out = subprocess.run(['llvm-nm', '-S', '-t', 'd', '--defined-only', path],
                         capture_output=True, text=True, check=True).stdout.split('\n')
    raw = []
    seen = set()
    for l in out:
        p = l.split()
        if len(p) == 4 and p[2] in 'tTwW' and p[0] not in seen:
            seen.add(p[0])
            raw.append((int(p[1]), p[3]))
    names = subprocess.run(['llvm-cxxfilt'], input='\n'.join(n for _, n in raw),
                           capture_output=True, text=True, check=True).stdout.split('\n')
    return [(s, n, m) for (s, m), n in zip(raw, names)]

def crate_of(name, mangled):
    if name.startswith('_$'):
        name = name[1:]
    for k, v in ESC.items():
        name = name.replace(k, v)
    name = name.replace('..', '::')
    if mangled.startswith('ring_core_') or mangled.startswith('ring_'):
        return 'ring (C/asm)'
    if '::' not in name:
        return '[C: musl, compiler-rt, ring asm]'
    m = re.match(r'^(?:core::ptr::drop_in_place|core::ptr::drop_in_place::)<(.*)', name)
    if m:
        name = m.group(1)
    name = re.sub(r'^[<&*\s]+(?:const |mut |dyn )?', '', name)
    name = re.sub(r'^(?:const |mut |dyn )', '', name)
    c = re.split(r'::|<| ', name, 1)[0].rstrip('>')
    if c in ('core', 'alloc', 'std', 'panic_abort', 'compiler_builtins', 'std_detect', 'hashbrown', 'rustc_demangle', 'addr2line', 'gimli', 'miniz_oxide', 'object', 'adler2'):
        return 'std (core, alloc, std)' if c in ('core', 'alloc', 'std') else c
    if c in ('T', 'F', 'S', 'I', 'A', 'B', 'E', 'W', 'R', 'U', 'V'):
        return '(blanket impls: `<T as Trait>`)'
    if c in ('str', 'bool', 'char', 'u8', 'u16', 'u32', 'u64', 'usize', 'i8', 'i16', 'i32', 'i64',
             'isize', 'f32', 'f64', '[T]', '[u8]', '()', 'u128', 'i128'):
        return 'std (core, alloc, std)'
    if c.startswith('_') or c in ('impl', 'fn'):
        return '[unknown]'
    return c

def table(path):
    t = collections.Counter()
    for s, n, m in syms(path):
        t[crate_of(n, m)] += s
    return t

def size_text(path):
    out = subprocess.run(['llvm-size', '-A', path], capture_output=True, text=True).stdout
    d = {}
    for l in out.split('\n'):
        p = l.split()
        if len(p) >= 2 and p[0].startswith('.') and p[1].isdigit():
            d[p[0]] = int(p[1])
    return d

paths = sys.argv[1:]
tabs = [table(p) for p in paths]
keys = sorted(set().union(*tabs), key=lambda k: -max(t[k] for t in tabs))
tot = [sum(t.values()) for t in tabs]
heads = ['before', 'after'] if len(paths) == 2 else ['bytes']
print('| crate | ' + ' | '.join(heads) + (' | change |' if len(paths) == 2 else ' |'))
print('|---|' + '---:|' * (len(paths) + (1 if len(paths) == 2 else 0)))
other = [0] * len(paths)
for k in keys:
    vals = [t[k] for t in tabs]
    if max(vals) < 4000:
        other = [o + v for o, v in zip(other, vals)]
        continue
    row = f'| {k} | ' + ' | '.join(f'{v:,}' for v in vals)
    if len(paths) == 2:
        row += f' | {vals[1]-vals[0]:+,}'
    print(row + ' |')
print('| (crates under 4 KB) | ' + ' | '.join(f'{v:,}' for v in other) + (f' | {other[1]-other[0]:+,} |' if len(paths) == 2 else ' |'))
print('| **functions, total** | ' + ' | '.join(f'**{v:,}**' for v in tot) + (f' | **{tot[1]-tot[0]:+,}** |' if len(paths) == 2 else ' |'))
secs = [size_text(p) for p in paths]
for s in ('.text', '.rodata', '.eh_frame', '.eh_frame_hdr', '.data.rel.ro', '.gcc_except_table'):
    vals = [d.get(s, 0) for d in secs]
    print(f'| section {s} | ' + ' | '.join(f'{v:,}' for v in vals) + (f' | {vals[1]-vals[0]:+,} |' if len(paths) == 2 else ' |'))
