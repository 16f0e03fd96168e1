"""The application: the ``octascope`` command (:mod:`.cli`, the only place Hydra is used), the
configuration checks (:mod:`.config`) and one run from a resolved configuration (:mod:`.run`)."""
