"""`python -m drmm_lightning.train ...` is `drmm-train ...`."""

from drmm_lightning.cli.train import main

if __name__ == "__main__":
    main()
