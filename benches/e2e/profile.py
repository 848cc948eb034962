"""Names the module's functions in a perf profile of Envoy (see benches/envoy-profile.sh).

usage: python3 benches/e2e/profile.py --pid PID --wasm FILE --stacks STACKS --rps R --seconds S
                                     [--freq F] [--top N]

STACKS is `perf script -F ip,dso` output of `perf record -g`: one block per sample, leaf first.
PID is the running Envoy: V8's jump table for the module is read from its memory. Its code region
is the executable anonymous mapping that starts with one 8-byte slot per function of the module,
each a `jmp rel32` (x86-64) to the code compiled for that function, in function-index order (the
functions the module imports have no slot). FILE gives the names (its name section).

Figures are CPU microseconds per request: each sample is 1/F s of Envoy's CPU (all its threads),
and R requests a second were answered during the S seconds recorded.
"""

import argparse
import bisect
import collections
import re
import struct
import sys


def leb128(data, at):
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at


def module_names(path):
    """(number of imported functions, number of declared functions, {function index: name})."""
    data = open(path, "rb").read()
    at, imported, declared, names = 8, 0, 0, {}
    while at < len(data):
        section = data[at]
        size, at = leb128(data, at + 1)
        end = at + size
        if section == 2:  # imports
            count, p = leb128(data, at)
            for _ in range(count):
                for _ in range(2):  # module and field names
                    length, p = leb128(data, p)
                    p += length
                kind = data[p]
                p += 1
                if kind == 0:  # function: type index
                    _, p = leb128(data, p)
                    imported += 1
                elif kind == 1:  # table: element type, limits
                    p += 1
                    flags, p = leb128(data, p)
                    _, p = leb128(data, p)
                    if flags & 1:
                        _, p = leb128(data, p)
                elif kind == 2:  # memory: limits
                    flags, p = leb128(data, p)
                    _, p = leb128(data, p)
                    if flags & 1:
                        _, p = leb128(data, p)
                elif kind == 3:  # global: type, mutability
                    p += 2
        elif section == 3:  # functions
            declared, _ = leb128(data, at)
        elif section == 0:
            length, p = leb128(data, at)
            if data[p : p + length] == b"name":
                p += length
                while p < end:
                    sub = data[p]
                    size, p = leb128(data, p + 1)
                    if sub == 1:  # function names
                        count, q = leb128(data, p)
                        for _ in range(count):
                            index, q = leb128(data, q)
                            length, q = leb128(data, q)
                            names[index] = data[q : q + length].decode("utf-8", "replace")
                            q += length
                    p += size
        at = end
    return imported, declared, names


ESCAPES = {"$LT$": "<", "$GT$": ">", "$RF$": "&", "$BP$": "*", "$LP$": "(", "$RP$": ")", "$C$": ",",
           "$u20$": " ", "$u27$": "'", "$u5b$": "[", "$u5d$": "]", "$u7b$": "{", "$u7d$": "}",
           "$u7e$": "~", "$SP$": "@"}


def demangle(name):
    """Rust's legacy mangling (`_ZN...E`) as a path, without the hash; other names as they are."""
    if not (name.startswith("_ZN") and name.endswith("E")):
        return name
    parts, at, body = [], 0, name[3:-1]
    while at < len(body):
        digits = re.match(r"\d+", body[at:])
        if not digits:
            return name
        at += len(digits.group())
        parts.append(body[at : at + int(digits.group())])
        at += int(digits.group())
    if parts and re.fullmatch(r"h[0-9a-f]{16}", parts[-1]):
        parts.pop()
    text = "::".join(parts).replace("..", "::")
    for escape, char in ESCAPES.items():
        text = text.replace(escape, char)
    return text.lstrip("_") if text.startswith("_$") else text


def jump_table(pid, declared):
    """(code region start, end, [function start address per declared function])."""
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb") as mem:
        for line in maps:
            fields = line.split()
            if fields[1] != "rwxp" and fields[1] != "r-xp":
                continue
            if len(fields) > 5:  # a file mapping
                continue
            low, high = (int(x, 16) for x in fields[0].split("-"))
            try:
                mem.seek(low)
                slots = mem.read(8 * declared)
            except OSError:
                continue
            if len(slots) < 8 * declared or any(slots[i] != 0xE9 for i in range(0, 8 * declared, 8)):
                continue
            starts = [low + i + 5 + struct.unpack_from("<i", slots, i + 1)[0] for i in range(0, 8 * declared, 8)]
            if not all(low <= s < high for s in starts):
                continue
            # After the module's functions V8 puts its own stubs (the wrappers that call Envoy's
            # functions): the last function ends where the first frame with another marker
            # begins (`push rbp; mov rbp, rsp; push imm8`, the module's functions push 0x30).
            last = max(starts)
            mem.seek(last)
            tail = mem.read(high - last)
            stub = re.compile(rb"\x55\x48\x89\xe5\x6a([^\x30])").search(tail, 1)
            return low, last + stub.start() if stub else high, starts
    sys.exit(f"no V8 jump table of {declared} slots in process {pid}: is it running this module?")


def read_samples(path):
    samples, current = [], []
    for line in open(path):
        fields = line.split()
        if not fields:
            if current:
                samples.append(current)
            current = []
            continue
        current.append((int(fields[0], 16), fields[-1]))
    if current:
        samples.append(current)
    return samples


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--wasm", required=True)
    parser.add_argument("--stacks", required=True)
    parser.add_argument("--rps", type=float, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--freq", type=float, default=2999)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()

    imported, declared, names = module_names(args.wasm)
    if not names:
        sys.exit(f"{args.wasm} has no name section: build it with its names (see benches/envoy-profile.sh)")
    low, high, starts = jump_table(args.pid, declared)
    order = sorted(range(declared), key=lambda i: starts[i])
    sorted_starts = [starts[i] for i in order]
    names_by_start = [demangle(names.get(imported + i, f"function {imported + i}")) for i in order]

    def function(ip):
        """The module function whose code holds ip; None outside the module's code."""
        if not low <= ip < high:
            return None
        k = bisect.bisect_right(sorted_starts, ip) - 1
        return names_by_start[k] if k >= 0 else None

    samples = read_samples(args.stacks)
    per = 1e6 / args.freq / (args.rps * args.seconds)  # µs of CPU per request, per sample
    us = lambda n: n * per  # noqa: E731

    total = len(samples)
    kinds = collections.Counter()
    self_time, inclusive, entry, host_by_caller = (collections.Counter() for _ in range(4))
    for stack in samples:
        frames = [(function(ip), dso) for ip, dso in stack]
        in_module = [f for f, _ in frames if f]
        if not in_module:
            kinds["Envoy and the kernel, outside calls into the module"] += 1
            continue
        leaf, leaf_dso = frames[0]
        if leaf:
            kinds["module code (V8-compiled)"] += 1
            self_time[leaf] += 1
        elif "perf-" in leaf_dso or "[unknown]" in leaf_dso:
            kinds["V8's call wrappers and builtins, inside calls into the module"] += 1
        else:
            kinds["Envoy and the kernel, called by the module (hostcalls)"] += 1
            host_by_caller[next(f for f, _ in frames if f)] += 1
        # The export Envoy called; anything else means the frame chain was cut (a sample taken
        # in a function's prologue, before its frame is linked).
        outermost = in_module[-1]
        entry[outermost if outermost.startswith("proxy_on_") else "(frame chain cut short)"] += 1
        for name in set(in_module):
            inclusive[name] += 1

    print(f"{total} samples at {args.freq:g} Hz, {args.rps:,.0f} requests/s: "
          f"{us(total):.1f} µs of Envoy's CPU per request\n")
    print("| where | µs/request | share |\n|---|--:|--:|")
    for kind, count in kinds.most_common():
        print(f"| {kind} | {us(count):.2f} | {count / total:.0%} |")
    print("\nCalls into the module (inclusive: the module's code and the hostcalls it makes):\n")
    print("| entry point | µs/request |\n|---|--:|")
    for name, count in entry.most_common():
        print(f"| `{name}` | {us(count):.2f} |")
    print(f"\nHostcalls' time in Envoy, by the module function that made them (top {args.top}):\n")
    print("| function | µs/request |\n|---|--:|")
    for name, count in host_by_caller.most_common(args.top):
        print(f"| `{name}` | {us(count):.2f} |")
    print(f"\nThe module's own code, by function (self time, top {args.top}):\n")
    print("| function | µs/request |\n|---|--:|")
    for name, count in self_time.most_common(args.top):
        print(f"| `{name}` | {us(count):.2f} |")
    print(f"\nBy function, inclusive (its callees and their hostcalls, top {args.top}):\n")
    print("| function | µs/request |\n|---|--:|")
    for name, count in inclusive.most_common(args.top):
        print(f"| `{name}` | {us(count):.2f} |")


if __name__ == "__main__":
    main()
