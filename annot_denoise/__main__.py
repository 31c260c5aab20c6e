"""Entry point for ``python -m annot_denoise``."""

from annot_denoise.cli import main

if __name__ == "__main__":
    main()
