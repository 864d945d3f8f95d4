"""Helper process for test_messages_roundtrip.py: publishes each reference message once.

    python tests/msg_roundtrip_publisher.py --namespace /ns [--timeout 30]

Waits (bounded) until every topic has a matched subscription, publishes the messages of
msg_fixtures.BUILDERS, then waits until every reliable subscriber has acknowledged them
before exiting 0. Exit 2 on timeout.
"""

import sys
import time

import msg_fixtures as fx
import rclpy
from rclpy.duration import Duration

QOS = fx.roundtrip_qos()


def main():
    args, deadline = fx.roundtrip_arguments(__doc__)

    rclpy.init()
    node = rclpy.create_node('xsam_msg_roundtrip_publisher', namespace=args.namespace)
    try:
        publishers = {name: node.create_publisher(msg_type, topic, QOS)
                      for name, (msg_type, topic) in fx.TOPICS.items()}
        # Bounded wait for discovery: spin_once returns on any event or after 50 ms.
        while not all(p.get_subscription_count() >= 1 for p in publishers.values()):
            if time.monotonic() > deadline:
                missing = [n for n, p in publishers.items() if p.get_subscription_count() < 1]
                print(f'publisher: no subscriber matched on {missing}', file=sys.stderr)
                return 2
            rclpy.spin_once(node, timeout_sec=0.05)

        for name, publisher in publishers.items():
            publisher.publish(fx.BUILDERS[name]())
            print(f'publisher: published {name}', flush=True)

        for name, publisher in publishers.items():
            remaining = max(0.1, deadline - time.monotonic())
            if not publisher.wait_for_all_acked(Duration(seconds=remaining)):
                print(f'publisher: {name} not acknowledged by every subscriber',
                      file=sys.stderr)
                return 2
        print('publisher: all acknowledged', flush=True)
        return 0
    finally:
        node.destroy_node()
        rclpy.shutdown()


if __name__ == '__main__':
    sys.exit(main())
