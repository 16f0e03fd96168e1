"""The fixed analysis steps between the stages — noise spectrum, crystal region, particles,
plausibility checks, lattice helpers, octahedral geometry, uncertainty, refinement — and the
pipeline that runs the stages with them (:mod:`.pipeline`)."""
