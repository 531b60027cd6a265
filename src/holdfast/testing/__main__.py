"""``python -m holdfast.testing``: serve a FakeOpenAIServer from this process until interrupted."""

from holdfast.testing.fake_server import main

main()
