"""Files that ``olharness.export_hf`` copies into an export; transformers loads them there."""
