"""The Triton client's gRPC channel: tritonclient's own options kept, reconnection capped at a second."""

from __future__ import annotations

import tritonclient.grpc as grpc_base

from .triton import MAX_RECONNECT_BACKOFF_MS, channel_args


def test_channel_args_keep_tritonclients_defaults_and_cap_the_reconnect_backoff() -> None:
    args = dict(channel_args())
    assert args["grpc.max_send_message_length"] == grpc_base.MAX_GRPC_MESSAGE_SIZE
    assert args["grpc.max_receive_message_length"] == grpc_base.MAX_GRPC_MESSAGE_SIZE
    assert args["grpc.keepalive_time_ms"] == grpc_base.KeepAliveOptions().keepalive_time_ms
    assert args["grpc.max_reconnect_backoff_ms"] == MAX_RECONNECT_BACKOFF_MS <= 1_000
