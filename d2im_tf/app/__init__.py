"""``d2im app``: a local web page and HTTP API that reconstruct an uploaded image into a mesh, and run
detail transfer and paste-n-reconstruct (:mod:`d2im_tf.applications`) on uploaded images.

:mod:`~d2im_tf.app.server` (the ASGI app and its routes), :mod:`~d2im_tf.app.validation` (reading and
checking uploads and options), :mod:`~d2im_tf.app.workers` (the bounded worker queue),
:mod:`~d2im_tf.app.service` (the loaded model, its results and their files),
:mod:`~d2im_tf.app.client` (a standard-library client of the API); ``static/`` holds the page and the
vendored three.js it loads. The API is documented in docs/app.md.
"""
