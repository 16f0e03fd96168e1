"""Check abTEM's centre-of-mass normalisation against an analytic case.

    python experiments/validation/icom_normalisation.py

Case: one thin slice (a single I atom, or a Pb-I pair) in vacuum and an aberration-free 300 kV,
29.9 mrad probe. For a phase grating t = exp(iφ), φ = σ V_proj, the mean transverse momentum of the
exit wave is exactly CoM(r0) = (1/2π) ∫ P(r - r0) ∇φ(r) dr when every scattered electron is counted
and the CoM is divided by the counted intensity (P = |probe|², ∫P = 1). Its integral is φ ⊗ P / 2π.

abTEM's ``DiffractionPatterns.center_of_mass`` is compared with that on the same potential, for the
full ("valid") detector and for patterns cropped to 2α, 1.3α. A public abTEM pull request reports that
the iCoM was normalised by the incident rather than the captured intensity (about 2x off when the
pattern is cropped); the version installed here divides by the captured intensity, which this
script confirms: the ratio stays ~1 for a cropped bright-field disc (all intensity except the
scattered tail is captured and the divisor is the captured part).
"""

from __future__ import annotations

import numpy as np


def main() -> None:
    import abtem
    from abtem.core.energy import energy2sigma
    from ase import Atoms

    print(f"abTEM {abtem.__version__}")
    L, s, n_scan = 12.0, 0.05, 24
    gpts = int(L / s)
    for label, atoms in (("I atom", Atoms("I", positions=[(L / 2, L / 2, 1.0)], cell=(L, L, 2.0))),
                         ("Pb-I pair 3.1 Å", Atoms("PbI", positions=[(L / 2 - 1.55, L / 2, 1.0), (L / 2 + 1.55, L / 2, 1.0)],
                                                  cell=(L, L, 2.0)))):
        pot = abtem.Potential(atoms, gpts=(gpts, gpts), slice_thickness=2.0, projection="infinite")
        v = np.asarray(pot.build().project().compute().array)  # [x, y]
        probe = abtem.Probe(energy=300e3, semiangle_cutoff=29.9, gpts=(gpts, gpts), extent=L)
        p = np.asarray(probe.build((0.0, 0.0)).intensity().compute().array).squeeze()
        p /= p.sum()
        phi = energy2sigma(300e3) * v
        analytic = np.fft.ifft2(np.fft.fft2(phi) * np.fft.fft2(p)).real / (2 * np.pi)
        kx = np.fft.fftfreq(gpts, d=s)[:, None]  # axis 0 = x in abTEM arrays
        grad_x = np.fft.ifft2(2j * np.pi * kx * np.fft.fft2(analytic)).real
        step = int(round((L / n_scan) / s))
        idx = np.arange(n_scan) * step
        ref = grad_x[np.ix_(idx, idx)]
        scan = abtem.GridScan(start=(0, 0), end=(L, L), gpts=(n_scan, n_scan), endpoint=False)
        probe_ms = abtem.Probe(energy=300e3, semiangle_cutoff=29.9)
        for max_angle in ("valid", 60.0, 40.0):
            with abtem.config.set({"diagnostics.progress_bar": False}):
                dp = probe_ms.scan(pot, scan=scan, detectors=abtem.PixelatedDetector(max_angle=max_angle)).compute()
            com = np.asarray(dp.center_of_mass().array)
            cx = com.real
            slope = float(np.sum(cx * ref) / np.sum(ref * ref))
            corr = float(np.corrcoef(cx.ravel(), ref.ravel())[0, 1])
            print(f"{label:>16}  detector max_angle={max_angle!s:>6}: CoM_x / analytic = {slope:.3f}  (corr {corr:.4f})")


if __name__ == "__main__":
    main()
