"""`python -m drmm_lightning.probe ...` is `drmm-probe ...`."""

from drmm_lightning.cli.probe import main

if __name__ == "__main__":
    main()
