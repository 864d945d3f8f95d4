"""Helper process for test_messages_roundtrip.py: receives one of each reference message.

    python tests/msg_roundtrip_receiver.py --namespace /ns --out-dir DIR [--timeout 30]

Subscribes (reliable, transient-local) to the topics of msg_fixtures.TOPICS, prints
"receiver: ready" once the subscriptions exist, and for each topic writes what it received
to DIR/<name>.cdr (rclpy.serialization of the received message, for an exact comparison)
and DIR/<name>.json (msg_fixtures.msg_to_dict of the received message, as this process
sees it). Exits 0 when all topics delivered, 2 on timeout.
"""

import json
import sys
import time
from pathlib import Path

import msg_fixtures as fx
import rclpy
from rclpy.serialization import serialize_message

QOS = fx.roundtrip_qos()


def main():
    args, deadline = fx.roundtrip_arguments(__doc__, (('--out-dir',), {'required': True, 'type': Path}))

    rclpy.init()
    node = rclpy.create_node('xsam_msg_roundtrip_receiver', namespace=args.namespace)
    received = {}
    try:
        for name, (msg_type, topic) in fx.TOPICS.items():
            node.create_subscription(
                msg_type, topic, lambda msg, name=name: received.setdefault(name, msg), QOS)
        print('receiver: ready', flush=True)

        while len(received) < len(fx.TOPICS):
            if time.monotonic() > deadline:
                missing = sorted(set(fx.TOPICS) - set(received))
                print(f'receiver: timed out waiting for {missing}', file=sys.stderr)
                return 2
            rclpy.spin_once(node, timeout_sec=0.5)

        args.out_dir.mkdir(parents=True, exist_ok=True)
        for name, msg in received.items():
            (args.out_dir / f'{name}.cdr').write_bytes(serialize_message(msg))
            (args.out_dir / f'{name}.json').write_text(
                json.dumps(fx.msg_to_dict(msg), ensure_ascii=False, indent=1), encoding='utf-8')
            print(f'receiver: got {name}', flush=True)
        return 0
    finally:
        node.destroy_node()
        rclpy.shutdown()


if __name__ == '__main__':
    sys.exit(main())
