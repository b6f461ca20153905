"""The rules both sides share: audio, windows, labels and states, decisions, the bundle format."""
