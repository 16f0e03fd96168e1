"""The contracts plugins code against: the values passed between stages (:mod:`.model`), the five
stage protocols (:mod:`.stages`), the plugin hooks and registry (:mod:`.hookspecs`,
:mod:`.registry`), declared parameters (:mod:`.params`), the error family (:mod:`.errors`) and the
compute-device settings (:mod:`.devices`). Imports nothing else of octascope."""
