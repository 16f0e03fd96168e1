"""Where images come from: microscope-file readers (:mod:`.readers`), the sources a run names
(:mod:`.sources`: file, bundled example, synthetic, simulated, field), the synthetic particle
(:mod:`.synthetic`) and the synthetic multi-particle field (:mod:`.synthetic_field`)."""
