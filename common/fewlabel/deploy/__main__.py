"""``python -m fewlabel.deploy -i IN -o OUT -m MODEL``: the app that fits the bundle (CT volumes or 2D frames)."""

from fewlabel.deploy.app import main

if __name__ == "__main__":
    main()
