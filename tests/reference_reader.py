"""Independent reader for `.bet` files, written from docs/format.md alone (no other source read).
Usage: reference_reader.py FILE [FILE ...] [--users 0,1,2] [--k 10]. Validates each file (spec §2,
§4-§6; blocked f32x8/f16x8 values are put back in row-major order, §4.1), recomputes top-k with
bit-exact f32 arithmetic (§7), prints one JSON document. Invalid files: "error: PATH: REASON" on
stderr (valid files are still reported) and exit status 2."""
import argparse, json, math, struct, sys
MAGIC, F32 = b'\x89BET\r\n\x1a\n', struct.Struct('<f')
def _crc_entry(n):
    for _ in range(8): n = (n >> 1) ^ 0x82F63B78 if n & 1 else n >> 1
    return n
CRC_T = [_crc_entry(n) for n in range(256)]
def crc32c(b, c=0xFFFFFFFF):
    for x in b:
        c = CRC_T[(c ^ x) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF
class Bad(Exception): pass
def need(cond, why):
    if not cond: raise Bad(why)
def f(x):  # round a double to the nearest f32 (RNE); NaN stays NaN, overflow goes to +-inf
    try: return F32.unpack(F32.pack(x))[0]
    except OverflowError: return math.copysign(math.inf, x)
# kind -> (name, allowed dtypes, REQUIRED flag); dtype -> (struct code, size)
VAL = {2, 3, 4, 5}  # value dtypes: f32, f16, f32x8, f16x8 (4 and 5: blocked order, section 4.1)
KINDS = {1: ('meta', {0}, 1), 2: ('urp', {1}, 1), 3: ('uval', VAL, 1), 4: ('irp', {1}, 1),
         5: ('ival', VAL, 1), 6: ('ugmf', VAL, 1), 7: ('igmf', VAL, 1), 8: ('dense', {2}, 1),
         9: ('uperm', {1}, 1), 10: ('iperm', {1}, 1), 11: ('uids', {0}, 0), 12: ('iids', {0}, 0),
         13: ('graph', {1}, 1)}
DT = {0: ('B', 1), 1: ('I', 4), 2: ('f', 4), 3: ('e', 2), 4: ('f', 4), 5: ('e', 2)}
al64 = lambda x: (x + 63) // 64 * 64
bits = lambda s: '7fc00000' if s != s else format(struct.unpack('<I', F32.pack(s))[0], '08x')
class PC:  # postcard decoder (section 6)
    def __init__(s, b): s.b, s.p = b, 0
    def raw(s, n):
        need(s.p + n <= len(s.b), 'metadata truncated'); s.p += n; return s.b[s.p - n:s.p]
    def var(s, bits):
        v = 0
        for i in range((bits + 6) // 7):
            x = s.raw(1)[0]; v |= (x & 0x7F) << (7 * i)
            if not x & 0x80: need(v < 1 << bits, 'metadata varint overflow'); return v
        raise Bad('metadata varint too long')
    def opt(s): t = s.raw(1)[0]; need(t < 2, 'metadata bad Option tag'); return t
    def str(s):
        try: return s.raw(s.var(64)).decode('utf-8')
        except UnicodeDecodeError: raise Bad('metadata string not UTF-8')
def metadata(b):
    need(len(b) <= 65536, 'metadata too large')
    p = PC(b); need(p.var(32) == 0, 'unknown metadata variant')
    m = dict(model=p.var(32), placement=p.var(32), d_max=p.var(32), vw=p.var(32), nu=p.var(32),
             ni=p.var(32), budget=None)
    need(m['model'] < 4 and m['placement'] < 4, 'bad model/placement enum')
    if p.opt(): m['budget'] = (p.var(64), p.raw(1)[0], p.var(64), p.var(64))
    p.str(); p.raw(32); p.str(); p.var(64); p.var(32); p.str(); p.str()  # provenance
    p.raw(24 * p.opt()); p.raw(24 * p.opt())  # validation, test: Option<Quality> (6 f32)
    need(p.p == len(b), 'metadata trailing bytes')
    return m
def unblock(v, rp, n):  # section 4.1: return the values in row-major order
    v = list(v)
    for g in range(n // 8):
        b, w = rp[8 * g], rp[8 * g + 1] - rp[8 * g]  # uniform group: 8 rows of one width w >= 1
        if w >= 1 and all(rp[8 * g + k] == b + k * w for k in range(9)):
            v[b:b + 8 * w] = [v[b + 8 * t + j] for j in range(8) for t in range(w)]
    return v
def check_ids(b, n):
    need(len(b) >= 8 * n + 8, 'id section too short')
    cnt, *rest = struct.unpack_from(f'<{2 * n + 2}I', b); need(cnt == n, 'id count mismatch')
    off, srt, ids = rest[:n + 1], rest[n + 1:], b[8 * n + 8:]
    need(off[0] == 0 and off[n] == len(ids), 'id offsets bounds')
    need(all(0 <= off[i + 1] - off[i] <= 4096 for i in range(n)), 'id offsets')
    need(all(x < n for x in srt), 'id sorted index out of range')
    key = lambda i: ids[off[i]:off[i + 1]]
    need(all(key(srt[i]) < key(srt[i + 1]) for i in range(n - 1)), 'ids not strictly sorted')
def parse(d):
    need(len(d) >= 64 and d[:8] == MAGIC, 'bad magic or too short')
    major, _, hcrc, flen, cnt, flags = struct.unpack_from('<HHIQII', d, 8)
    need(major == 1, 'unsupported major'); need(flen == len(d), 'file_len mismatch')
    need(cnt <= 64 and 64 + 32 * cnt <= len(d), 'bad section count')
    need(crc32c(d[:12] + b'\0' * 4 + d[16:64 + 32 * cnt]) == hcrc, 'header CRC mismatch')
    need(flags == 0 and not any(d[32:64]), 'header flags/reserved nonzero')
    sec, end, seen, blocked = {}, 64 + 32 * cnt, set(), set()
    for e in range(cnt):
        kind, dt, fl, crc, off, ln, res = struct.unpack_from('<HBBIQQQ', d, 64 + 32 * e)
        need(res == 0 and off + ln <= flen, 'section reserved/bounds')
        need(off == al64(end) and not any(d[end:off]), 'section layout/padding')
        need(not fl & ~1 and kind not in seen, 'section flags / duplicate kind'); seen.add(kind)
        if kind in KINDS:
            need(dt in KINDS[kind][1] and fl == KINDS[kind][2], 'known kind with bad flags/dtype')
            need(ln % DT[dt][1] == 0, 'length not a whole number of elements')
        else: need(not fl & 1, f'unknown REQUIRED kind {kind}')
        b, end = d[off:off + ln], off + ln; need(crc32c(b) == crc, f'section {kind} CRC mismatch')
        if kind in KINDS:
            sec[KINDS[kind][0]] = b if dt == 0 else list(struct.unpack(f'<{ln // DT[dt][1]}{DT[dt][0]}', b))
            if dt in (4, 5): blocked.add(KINDS[kind][0])
    need(end == len(d), 'trailing bytes')
    need(all(k in sec for k in ('meta', 'urp', 'uval', 'irp', 'ival')), 'missing required section')
    m = metadata(sec['meta']); ncf, dm = m['model'] == 3, m['d_max']
    need((m['placement'] == 0) == (m['model'] in (0, 3)), 'placement/model mismatch')
    need(m['placement'] != 1 or m['model'] == 1, 'input placement outside LightGCN')
    need(('graph' in sec) == (m['placement'] == 1), 'graph present exactly for the input placement')
    need(dm >= 1 and m['vw'] == dm * (4 if m['model'] == 2 else 1) and m['vw'] <= 1024, 'bad widths')
    need(m['nu'] <= 1 << 30 and m['ni'] <= 1 << 30, 'too many rows')
    need(all((k in sec) == ncf for k in ('ugmf', 'igmf', 'dense')), 'NCF sections mismatch')
    for side, n in (('u', m['nu']), ('i', m['ni'])):
        rp, vals = sec[side + 'rp'], sec[side + 'val']
        need(len(rp) == n + 1 and rp[0] == 0 and rp[n] == len(vals), f'{side} row_ptr ends')
        need(all(0 <= rp[r + 1] - rp[r] <= m['vw'] for r in range(n)), f'{side} row widths')
        perm = sec.get(side + 'perm', list(range(n)) * 2)
        need(len(perm) == 2 * n and all(x < n for x in perm), f'{side} permutation')
        need(all(perm[n + perm[i]] == i for i in range(n)), f'{side} permutation not inverse')
        if side + 'val' in blocked: vals = unblock(vals, rp, n)
        m[side + 'rows'] = [vals[rp[r]:rp[r + 1]] for r in perm[:n]]  # by index, not storage row
        if ncf:
            g = sec[side + 'gmf']; need(len(g) == len(vals), f'{side} GMF length')
            if side + 'gmf' in blocked: g = unblock(g, rp, n)
            m[side + 'g'] = [g[rp[r]:rp[r + 1]] for r in perm[:n]]
        if side + 'ids' in sec: check_ids(sec[side + 'ids'], n)
    stored = sum(len(sec[k]) for k in ('uval', 'ival', 'ugmf', 'igmf') if k in sec)
    if ncf: m['dense'] = sec['dense']; need(len(m['dense']) == 2 * dm * dm + 3 * dm + 1, 'dense length')
    if 'graph' in sec:  # section 4.2
        g, nu = sec['graph'], m['nu']; need(len(g) >= nu + 2, 'graph length')
        L, off, its = g[0], g[1:nu + 2], g[nu + 2:]
        need(1 <= L <= 8 and off[0] == 0 and off[nu] == len(its), 'graph layers / offsets')
        need(all(off[u] <= off[u + 1] for u in range(nu)), 'graph offsets decrease')
        for u in range(nu):
            lst = its[off[u]:off[u + 1]]
            need(all(x < m['ni'] for x in lst) and all(a < b for a, b in zip(lst, lst[1:])), 'graph items')
        m['graph'] = (L, off, its)
    if m['budget']:
        units, scale, limit, st = m['budget']
        need(0 < units <= 10 ** scale, 'keep out of (0, 1]')
        need(limit == units * dm * (m['nu'] + m['ni']) // 10 ** scale, 'budget limit')
        need(st == stored and st <= limit, 'budget stored')
    return m
def dot(a, b):  # section 7.1
    acc = [0.0] * 8
    for t in range(min(len(a), len(b))):
        acc[t & 7] = f(acc[t & 7] + f(a[t] * b[t]))
    s = [f(acc[l] + acc[l + 4]) for l in range(4)]
    return f(f(s[0] + s[2]) + f(s[1] + s[3]))
def propagate(m):  # section 7.5: final vectors replace the ego rows
    L, off, its = m.pop('graph'); nu, ni, d = m['nu'], m['ni'], m['d_max']
    x = [list(r) + [0.0] * (d - len(r)) for r in m['urows'] + m['irows']]
    deg = [off[u + 1] - off[u] for u in range(nu)] + [0] * ni
    users_of = [[] for _ in range(ni)]
    for u in range(nu):
        for i in its[off[u]:off[u + 1]]: deg[nu + i] += 1; users_of[i].append(u)  # increasing u
    w = lambda u, i: f(1.0 / math.sqrt(float(deg[u]) * float(deg[nu + i])))
    def gather(terms):
        acc = [0.0] * d
        for src, wt in terms: acc = [f(acc[t] + f(wt * x[src][t])) for t in range(d)]
        return acc
    total = [r[:] for r in x]
    for _ in range(L):
        nxt = [gather((nu + i, w(u, i)) for i in its[off[u]:off[u + 1]]) for u in range(nu)]
        nxt += [gather((u, w(u, i)) for u in users_of[i]) for i in range(ni)]
        total = [[f(a + b) for a, b in zip(r, q)] for r, q in zip(total, nxt)]; x = nxt
    sc = f(1.0 / (L + 1))
    fin = [[f(v * sc) for v in r] for r in total]
    m['urows'], m['irows'] = fin[:nu], fin[nu:]
def scores(m, u):
    if 'graph' in m: propagate(m)
    items = range(len(m['irows']))
    if m['model'] != 3: return [dot(m['urows'][u], m['irows'][i]) for i in items]
    d, W = m['d_max'], m['dense']; o = 2 * d * d  # section 7.3
    W1 = [W[2 * d * j:2 * d * j + 2 * d] for j in range(d)]  # W1u[j] = W1[j][:d], W1i[j] = W1[j][d:]
    b1, wh, wg, bo = W[o:o + d], W[o + d:o + 2 * d], W[o + 2 * d:o + 3 * d], W[o + 3 * d]
    if 'icache' not in m:  # dot(W1i[j], im) depends on the item only
        m['icache'] = [[dot(W1[j][d:], m['irows'][i]) for j in range(d)] for i in items]
    du = [dot(W1[j][:d], m['urows'][u]) for j in range(d)]
    ug, out = m['ug'][u], []
    for i in items:
        ic = m['icache'][i]  # relu(x) = x if x > 0 else +0.0, so relu(NaN) = +0.0
        h = [x if x > 0 else 0.0 for x in (f(f(du[j] + ic[j]) + b1[j]) for j in range(d))]
        ig = m['ig'][i]; k = min(len(ug), len(ig))
        g = [f(ug[j] * ig[j]) for j in range(k)] + [0.0] * (d - k)
        out.append(f(f(dot(wh, h) + dot(wg, g)) + bo))
    return out
def main():
    ap = argparse.ArgumentParser(); ap.add_argument('files', nargs='+')
    ap.add_argument('--users', default='0,1,2'); ap.add_argument('--k', type=int, default=10)
    a, res, rc = ap.parse_args(), [], 0
    for path in a.files:
        try:
            with open(path, 'rb') as fh: m = parse(fh.read())
        except (Bad, OSError, struct.error, ValueError, IndexError) as e:  # any failure = invalid
            print(f'error: {path}: {e}', file=sys.stderr); rc = 2; continue
        out = []
        for u in (int(x) for x in a.users.split(',') if x and 0 <= int(x) < m['nu']):
            sc = scores(m, u)
            order = sorted(range(len(sc)), key=lambda i: (1, 0.0, i) if sc[i] != sc[i] else (0, -sc[i], i))
            out.append({'user': u, 'top': [[i, bits(sc[i])] for i in order[:a.k]]})
        res.append({'path': path, 'model': ['mf', 'lightgcn', 'ngcf', 'ncf'][m['model']],
                    'n_users': m['nu'], 'n_items': m['ni'], 'results': out})
    print(json.dumps({'files': res})); sys.exit(rc)
if __name__ == '__main__': main()
