"""Entry point of the fewlabel MONAI Application Package: ``python /opt/holoscan/app`` (or ``python deploy/map``).

Runs :func:`fewlabel.deploy.app.main`: the CT app for a CT bundle, the frames app for a 2D bundle,
with ``-i/-o/-m`` or the HOLOSCAN_* variables the MAP sets. ``fewlabel`` must be importable: in a
MAP it is the copy placed beside this file (``make map-context``), elsewhere the installed package.
"""

from fewlabel.deploy.app import main

if __name__ == "__main__":
    main()
