# transform.py SRC DST: kernel<<<g, b, smem, stream>>>(args); -> emu_launch(g, b, smem, [&] { kernel(args); });
# extern __shared__ -> extern; __shared__ -> static (one copy per kernel, blocks run one at a time)
import re, sys
s = open(sys.argv[1]).read()
def split_top(x):
    out, depth, cur = [], 0, ''
    for ch in x:
        if ch in '([<': depth += 1
        if ch in ')]>': depth -= 1
        if ch == ',' and depth == 0: out.append(cur); cur = ''
        else: cur += ch
    out.append(cur)
    return [o.strip() for o in out]
pat = re.compile(r'([A-Za-z_]\w*(?:<[^<>;]*>)?)<<<(.*?)>>>\((.*?)\);', re.S)
def rep(m):
    cfg = split_top(m.group(2))
    return 'emu_launch(dim3(%s), dim3(%s), (size_t)(%s), [&] { %s(%s); });' % (cfg[0], cfg[1], cfg[2], m.group(1), m.group(3))
s, n = pat.subn(rep, s)
s = s.replace('extern __shared__', 'extern').replace('__shared__', 'static')
open(sys.argv[2], 'w').write(s)
print(sys.argv[1], n, 'launches', file=sys.stderr)
