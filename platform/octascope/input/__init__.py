"""Where images come from: microscope-file readers (:mod:`.readers`), the sources a run names
(:mod:`.sources`: file, bundled example, synthetic, simulated) and the synthetic particle
(:mod:`.synthetic`)."""
