"""Settings: the typed schema machinery (:mod:`.schema`) and the compile options of a run (:mod:`.compile`)."""
