"""Zarr v3 codecs for replay frames, registered through the ``zarr.codecs`` entry point.

Both follow the registered Zarr extension specs, so any reader that implements
them reads our frames:

- ``singleton_dim`` (an array -> array filter) removes the leading length-1 axis
  of a (1, H, W, 3) frame chunk;
- ``jpeg`` (the array -> bytes serializer) stores the (H, W, 3) uint8 chunk as one
  baseline JPEG.

Installing the package is enough for plain zarr-python to read a store:
``zarr.open_group(path)["races/<id>/frames"][i]``.
"""

from replay.codecs.jpeg import JpegCodec
from replay.codecs.singleton_dim import SingletonDimCodec

__all__ = ["JpegCodec", "SingletonDimCodec"]
