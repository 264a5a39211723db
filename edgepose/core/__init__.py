"""Core types and plumbing shared by every stage: errors, files, poses, geometry, payloads, configuration."""
