#!/usr/bin/env python3
"""Prints what an unfinished `bet search` has evaluated, from its search record in the checkpoint
directory (`search-<fingerprint>.json`: per evaluated action its fitness as f64 bits and its
seconds). Strategy by iteration as in docs/search.md (t mod 5: 0-2 greedy I, 3 random II, 4
nearest III). Standard library only. Usage: read_search_record.py [RECORD.json] (default: the
newest record in ~/.cache/bet/checkpoints)."""
import json,struct,sys,glob,os
f=sys.argv[1] if len(sys.argv)>1 else max(glob.glob(os.path.expanduser('~/.cache/bet/checkpoints/search-*.json')),key=os.path.getmtime)
d=json.load(open(f))
fit=[struct.unpack('<d',struct.pack('<Q',b))[0] for b in d['fitness_bits']]
best=0; 
for i,(x,s) in enumerate(zip(fit,d['seconds'])):
    best=max(best,x); print(i, 'strategy', ['I','I','I','II','III'][i%5], f"{x:.4f}", f"best {best:.4f}", f"{s:.0f}s")
print('n',len(fit),'search_seconds',d['search_seconds'], 'mean s', sum(d['seconds'])/len(fit))
