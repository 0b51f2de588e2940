"""`python -m drmm_lightning.eval ...` is `drmm-eval ...`."""

from drmm_lightning.cli.eval import main

if __name__ == "__main__":
    main()
