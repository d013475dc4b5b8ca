"""Produces a flood of hostile-looking traffic for a memory soak of `gatewatch run`.

Every record is an Apache combined log line from a random client address (one in ten
IPv6), to a random path of one to six random words, with up to four random query
parameters, one in twenty carrying an attack payload (SQL injection, XSS, traversal,
cloud metadata URL, command injection), so that client, pair and endpoint state, the
templater, the inventory and the incident table all meet a stream of new keys. Event
time advances 5,000 records per second from 2026-01-05T10:00:00Z.

    pip install kafka-python
    python3 benches/flood_soak.py --topic soak-flood --events 4000000

Then run `gatewatch run` on the topic (format combined) and sample its RSS; see
BENCHMARKS.md, "Memory under a flood (whole process)".
"""
import argparse
import random
import time

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

PAYLOADS = [
    "' OR 1=1--",
    "<script>alert(1)</script>",
    "../../etc/passwd",
    "http://169.254.169.254/latest/meta-data/",
    ";cat /etc/passwd",
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--brokers", default="127.0.0.1:9092")
    ap.add_argument("--topic", required=True)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--events", type=int, default=4_000_000)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()

    rng = random.Random(a.seed)
    admin = KafkaAdminClient(bootstrap_servers=a.brokers)
    try:
        admin.create_topics([NewTopic(a.topic, a.partitions, 1)])
    except Exception as e:  # an existing topic is fine
        print("create topic:", e)
    producer = KafkaProducer(
        bootstrap_servers=a.brokers, linger_ms=50, batch_size=1 << 20, acks=1
    )
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = [
        "".join(rng.choice(letters) for _ in range(rng.randint(3, 12)))
        for _ in range(50_000)
    ]
    agents = [f"Mozilla/5.0 (X11; Linux x86_64) rv:{i}" for i in range(200)]
    agents += [f"curl/7.{i}" for i in range(100)]
    t0 = 1_767_607_200  # 2026-01-05T10:00:00Z
    started = time.time()
    for i in range(a.events):
        ts = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(t0 + i // 5000))
        if rng.random() < 0.9:
            ip = "%d.%d.%d.%d" % (
                rng.randint(1, 223),
                rng.randint(0, 255),
                rng.randint(0, 255),
                rng.randint(1, 254),
            )
        else:
            ip = "2001:db8:%x:%x::%x" % (
                rng.getrandbits(16),
                rng.getrandbits(16),
                rng.getrandbits(16),
            )
        path = "/" + "/".join(rng.choice(words) for _ in range(rng.randint(1, 6)))
        query = "&".join(
            f"{rng.choice(words)}={rng.choice(words)}" for _ in range(rng.randint(0, 4))
        )
        if rng.random() < 0.05:
            attack = "q=" + rng.choice(PAYLOADS).replace(" ", "%20")
            query = f"{query}&{attack}" if query else attack
        target = path + ("?" + query if query else "")
        method = rng.choice(["GET", "GET", "POST", "PUT", "DELETE"])
        status = rng.choice([200, 200, 200, 404, 401, 403, 500, 302])
        line = '%s - - [%s] "%s %s HTTP/1.1" %d %d "-" "%s"' % (
            ip, ts, method, target, status, rng.randint(0, 200_000), rng.choice(agents)
        )
        producer.send(a.topic, key=ip.encode(), value=line.encode())
        if i % 500_000 == 0:
            print(f"{i} records, {time.time() - started:.0f} s", flush=True)
    producer.flush()
    print(f"{a.events} records in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
