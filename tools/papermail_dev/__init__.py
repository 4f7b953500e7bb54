"""papermail's developer tools: the delivery benchmark and the test SMTP sink.

Installed by `make test` / `make bench` (``pip install -e tools``), never by a
production install.
"""
