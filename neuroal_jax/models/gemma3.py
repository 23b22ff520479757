"""placeholder: filled in by the family implementation."""
