"""Environment monitoring: four stages in four processes that find each other by mDNS.

sensor -readings-> cleaning -clean-> analysis -analysis_results-> display. On a LAN start display,
then analysis --peers 1, cleaning --peers 2, sensor --peers 3 (the stages further down to wait for),
each with --host 0.0.0.0. `make demo` runs all four here, inside a private network namespace.
"""

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from collections import deque
from dataclasses import dataclass, field, replace

from mesh import MeshNode, MessageContext, RoutedAgent, TopicId, event, type_subscription

STATS: dict[str, float] = {"messages": 0, "clamped": 0, "alerts": 0}  # printed when the stage stops
LATENCIES_MS: list[float] = []  # display: from the sensor's publish to here


@dataclass
class Reading:
    sensor: str
    seq: int
    temperature: float  # °C
    humidity: float  # %
    sent_at: float  # time.time() at the sensor
    trend: float = 0.0  # analysis: °C per reading over the last 10 readings
    alerts: list[str] = field(default_factory=list)  # analysis: values more than 2 sd from the mean


def analyse(window: list[Reading]) -> tuple[float, list[str]]:
    """The temperature trend over ``window`` (least squares) and alerts for its newest reading."""
    temps = [r.temperature for r in window]
    trend = statistics.linear_regression(range(len(temps)), temps).slope if len(temps) > 1 else 0.0
    alerts = []
    for name, unit, values in (("temperature", "°C", temps), ("humidity", "%", [r.humidity for r in window])):
        mean = statistics.fmean(values)
        if len(values) >= 5 and abs(values[-1] - mean) > 2 * statistics.pstdev(values):
            alerts.append(f"{name} {values[-1]:.1f} {unit} is more than 2 sd from the mean {mean:.1f} {unit}")
    return trend, alerts


@type_subscription("readings")
class Cleaner(RoutedAgent):
    @event
    async def on_reading(self, message: Reading, ctx: MessageContext) -> None:
        r = message
        clean = replace(r, temperature=min(max(r.temperature, 15.0), 35.0), humidity=min(max(r.humidity, 20.0), 90.0))
        STATS["messages"] += 1
        if clean != r:
            STATS["clamped"] += 1
            print(f"cleaning  #{r.seq}: clamped {r.temperature:.1f} °C {r.humidity:.0f} % into 15-35 °C 20-90 %")
        await self.publish_message(clean, TopicId("clean", self.id.key))


@type_subscription("clean")
class Analyst(RoutedAgent):  # one per sensor: the topic's source (the sensor) is the agent's key
    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.window: deque[Reading] = deque(maxlen=10)

    @event
    async def on_clean(self, message: Reading, ctx: MessageContext) -> None:
        self.window.append(message)
        trend, alerts = analyse(list(self.window))
        STATS["messages"] += 1
        result = replace(message, trend=trend, alerts=alerts)
        await self.publish_message(result, TopicId("analysis_results", self.id.key))


@type_subscription("analysis_results")
class Display(RoutedAgent):
    @event
    async def on_result(self, message: Reading, ctx: MessageContext) -> None:
        r = message
        LATENCIES_MS.append((time.time() - r.sent_at) * 1000)
        STATS["messages"], STATS["alerts"] = STATS["messages"] + 1, STATS["alerts"] + len(r.alerts)
        print(f"display   #{r.seq} {r.sensor}: {r.temperature:.1f} °C {r.humidity:.0f} %, trend {r.trend:+.2f} "
              f"°C/reading, {LATENCIES_MS[-1]:.1f} ms after the sensor")  # fmt: skip
        for alert in r.alerts:
            print(f"display   #{r.seq} ALERT {alert}")


async def sense(node: MeshNode, readings: int, interval: float, sensor: str = "lab") -> None:
    rng = random.Random(7)  # the same readings in every run; every 10th one is a faulty spike
    for seq in range(readings):
        spike = seq % 10 == 6
        temperature, humidity = (40.0, 97.0) if spike else (22 + 0.05 * seq + rng.gauss(0, 0.3), 50 + rng.gauss(0, 2))
        reading = Reading(sensor, seq, temperature, humidity, time.time())
        await node.publish_message(reading, TopicId("readings", sensor))
        STATS["messages"] += 1
        print(f"sensor    #{seq} {sensor}: {temperature:.1f} °C {humidity:.0f} %")
        await asyncio.sleep(interval)


async def main() -> None:
    stages = {"cleaning": Cleaner, "analysis": Analyst, "display": Display}
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("stage", choices=["sensor", *stages])
    options = {"--mesh": "environment", "--host": "127.0.0.1", "--peers": 0, "--readings": 10**6, "--interval": 0.5}
    for option, default in options.items():  # --readings and --interval: the sensor's
        parser.add_argument(option, type=type(default), default=default)
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # each line at once, also into a pipe
    async with MeshNode(name=args.stage, mesh=args.mesh, host=args.host) as node:
        if args.stage in stages:
            await stages[args.stage].register(node, args.stage, lambda: stages[args.stage](args.stage))
        await node.wait_for_peers(args.peers, timeout=30)
        print(f"{args.stage} ready at {node.address}")
        sensor = asyncio.create_task(sense(node, args.readings, args.interval)) if args.stage == "sensor" else None
        await node.stop_when_signal()
        if sensor is not None:
            sensor.cancel()
            await asyncio.gather(sensor, return_exceptions=True)
    if LATENCIES_MS:
        STATS.update(latency_p50_ms=statistics.median(LATENCIES_MS), latency_max_ms=max(LATENCIES_MS))
    print(f"{args.stage} summary {json.dumps(STATS)}")


if __name__ == "__main__":
    asyncio.run(main())
