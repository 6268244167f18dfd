"""The model record, shared by the export and the scoring job: model.json (record), the taxonomy, the score
post-processing, the accuracy limits and the packaged reference data (data/). Neither torch nor ray."""
