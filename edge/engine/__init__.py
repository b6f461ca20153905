"""The engine: a bundle's model deciding audio (classifier, detector, hop lines, pacing, audit, CPU rules)."""
