"""Where the noise-free MD error sits: per-species correlation of the Gaussian locator's error with the
spread of the column's atoms (truth ``xy_spread_A``), outermost shell vs the rest.

Usage: ``python experiments/benchmarks/precision_floor.py`` (cached images; ~30 s).
"""
import sys; sys.path.insert(0, __import__("os").path.dirname(__file__))
import numpy as np, torch; torch.set_num_threads(1)
from precision import simulate_image
from octascope import analyze
from octascope_plugins.metric.accuracy import match_points
s = simulate_image("md","clean",0); t = s.truth.columns
r = analyze(s.image, truth=s.truth, progress=None, metrics=[])
c = r.columns
fi, tj = match_points(c[["x_A","y_A"]].to_numpy(), t[["x_A","y_A"]].to_numpy(), 0.6)
e = np.hypot(*((c[["x_A","y_A"]].to_numpy()[fi]-t[["x_A","y_A"]].to_numpy()[tj])*100).T)
sp = t.species.to_numpy()[tj]; spread = t.xy_spread_A.to_numpy()[tj]*100; shell=t.shell.to_numpy()[tj]
for k in ("Pb","X","Cs"):
    m = sp==k
    print(k, "corr(|err|, xy_spread)=%.2f"%np.corrcoef(e[m], spread[m])[0,1], "rmse outer shell0 %.1f / inner %.1f"%(np.sqrt(np.mean(e[m&(shell==0)]**2)), np.sqrt(np.mean(e[m&(shell>0)]**2))), "median spread %.1f pm"%np.median(spread[m]))
