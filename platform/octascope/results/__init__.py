"""What a run leaves behind: output files (:mod:`.outputs`), summary.json and the printed report
(:mod:`.summary`), figures (:mod:`.figures`), MLflow tracking (:mod:`.tracking`), comparisons of
tracked runs (:mod:`.compare`) and process helpers (:mod:`.processes`)."""
