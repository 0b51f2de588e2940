"""`python -m drmm_lightning.render ...` is `drmm-render ...`."""

from drmm_lightning.cli.render import main

if __name__ == "__main__":
    main()
