"""The demo city: where its devices stand, and how its day unfolds (sun, traffic, weather).

Everything is a pure function of a seed, a scale and a date: the plan of the city comes from
``random.Random(f"{seed}:plan")``, each day's traffic from ``random.Random(f"{seed}:{date}:traffic")``.
No global random state, no wall clock.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

#: The demo city stands where the adapter samples do (Madrid's coordinates and time zone).
CITY_NAME = "Demo City"
CENTER = (-3.7038, 40.4168)
ZONE_NAME = "Europe/Madrid"
ZONE = ZoneInfo(ZONE_NAME)

#: Reports of lamps, counters and most sensors come every 15 minutes: 96 slots a day.
SLOT = timedelta(minutes=15)
SLOTS_PER_DAY = 96

VEHICLE_SHARE: dict[str, float] = {
    "car": 0.74, "van": 0.08, "bus": 0.03, "motorcycle": 0.06, "bicycle": 0.06, "truck": 0.03,
}


# --------------------------------------------------------------------------------------------------
# Sun and daily curves
# --------------------------------------------------------------------------------------------------


def _solar_terms(day: date) -> tuple[float, float]:
    """(declination in radians, equation of time in minutes) for ``day`` (simple NOAA-style fit)."""
    n = day.timetuple().tm_yday
    declination = math.radians(23.44) * math.sin(2 * math.pi * (284 + n) / 365)
    b = 2 * math.pi * (n - 81) / 364
    eot = 9.87 * math.sin(2 * b) - 7.53 * math.cos(b) - 1.5 * math.sin(b)
    return declination, eot


def sun_times(day: date, lon: float = CENTER[0], lat: float = CENTER[1]) -> tuple[datetime, datetime]:
    """Sunrise and sunset (UTC) on ``day``, within a few minutes, for a place outside the polar circles."""
    declination, eot = _solar_terms(day)
    phi = math.radians(lat)
    cos_w = (math.sin(math.radians(-0.833)) - math.sin(phi) * math.sin(declination)) / (
        math.cos(phi) * math.cos(declination)
    )
    half_day = math.degrees(math.acos(max(-1.0, min(1.0, cos_w))))  # degrees of hour angle
    noon = 720 - 4 * lon - eot  # minutes after UTC midnight
    midnight = datetime.combine(day, time(0), tzinfo=UTC)
    return midnight + timedelta(minutes=noon - 4 * half_day), midnight + timedelta(minutes=noon + 4 * half_day)


def sun_elevation(moment: datetime, lon: float = CENTER[0], lat: float = CENTER[1]) -> float:
    """Elevation of the sun above the horizon, in degrees."""
    utc = moment.astimezone(UTC)
    declination, eot = _solar_terms(utc.date())
    minutes = utc.hour * 60 + utc.minute + utc.second / 60
    hour_angle = math.radians((minutes - (720 - 4 * lon - eot)) / 4)
    phi = math.radians(lat)
    s = math.sin(phi) * math.sin(declination) + math.cos(phi) * math.cos(declination) * math.cos(hour_angle)
    return math.degrees(math.asin(max(-1.0, min(1.0, s))))


def local_hour(moment: datetime) -> float:
    """Hours since local midnight (0..24)."""
    local = moment.astimezone(ZONE)
    return local.hour + local.minute / 60 + local.second / 3600


def _bump(h: float, centre: float, width: float) -> float:
    return math.exp(-(((h - centre) / width) ** 2) / 2)


def traffic_curve(h: float, weekday: int) -> float:
    """Vehicle activity at local hour ``h`` relative to the morning peak: peaks near 08:15 and 18:30."""
    if weekday >= 5:  # weekends: late, flat, one long afternoon
        return 0.05 + 0.55 * _bump(h, 13.0, 3.5) + 0.35 * _bump(h, 19.5, 2.0)
    return (
        0.04
        + 1.00 * _bump(h, 8.25, 1.0)
        + 0.85 * _bump(h, 18.5, 1.4)
        + 0.45 * _bump(h, 13.5, 2.6)
        + 0.06 * _bump(h, 23.5, 1.0)
    )


def pedestrian_curve(h: float, weekday: int) -> float:
    """Pedestrian activity: morning commute, lunch, a strong evening and some night life on Fridays."""
    night_life = 0.25 if weekday in (4, 5) else 0.06
    return (
        0.02
        + 0.55 * _bump(h, 8.5, 1.0)
        + 0.70 * _bump(h, 14.0, 1.5)
        + 1.00 * _bump(h, 19.0, 1.8)
        + night_life * _bump(h, 23.8, 1.3)
    )


def daily_wave(h: float, low_at: float, high_at: float) -> float:
    """0 at ``low_at`` (dawn), 1 at ``high_at`` (mid-afternoon), smooth and asymmetric in between."""
    if low_at <= h <= high_at:
        x = (h - low_at) / (high_at - low_at)
    else:
        span = 24 - (high_at - low_at)
        x = 1 - ((h - high_at) % 24) / span
    return (1 - math.cos(math.pi * x)) / 2


def poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (normal approximation for large means)."""
    if mean <= 0:
        return 0
    if mean > 40:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def jitter_point(rng: random.Random, around: tuple[float, float], metres: float) -> tuple[float, float]:
    """A point within ``metres`` of ``around`` ([lon, lat]), rounded to ~1 m."""
    angle = rng.uniform(0, 2 * math.pi)
    distance = metres * math.sqrt(rng.random())
    dlat = distance * math.cos(angle) / 111_320
    dlon = distance * math.sin(angle) / (111_320 * math.cos(math.radians(around[1])))
    return (round(around[0] + dlon, 6), round(around[1] + dlat, 6))


def slot_times(day: date) -> list[datetime]:
    """The ends of the 96 fifteen-minute slots of the local day, in UTC (a DST day has 92 or 100)."""
    start = datetime.combine(day, time(0), tzinfo=ZONE).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=ZONE).astimezone(UTC)
    out: list[datetime] = []
    moment = start + SLOT
    while moment <= end:
        out.append(moment)
        moment += SLOT
    return out


# --------------------------------------------------------------------------------------------------
# The plan of the city (static for a seed and a scale)
# --------------------------------------------------------------------------------------------------

STREETS = (
    "mayor", "alcala", "atocha", "prado", "castellana", "goya", "serrano", "princesa", "toledo",
    "segovia", "bailen", "arenal", "fuencarral", "hortaleza", "velazquez", "ibiza", "delicias",
    "embajadores", "bravo-murillo", "arturo-soria", "paralelo", "retiro", "lavapies", "chamberi",
)


@dataclass(frozen=True, slots=True)
class Lamp:
    id: str
    location: tuple[float, float]
    group: str | None
    rated_w: float
    energy_wh: float
    """Lifetime energy at the start of the first simulated day."""


@dataclass(frozen=True, slots=True)
class Cabinet:
    id: str
    location: tuple[float, float]
    groups: tuple[str, ...]
    working_mode: str
    lamps: tuple[Lamp, ...]
    counter: int
    """Index of the nearest traffic counter (adaptive dimming follows it)."""
    meter_kwh: float


@dataclass(frozen=True, slots=True)
class Counter:
    id: str
    kind: str
    """``crossing`` (people and vehicles), ``road`` (vehicles) or ``plaza`` (people)."""
    location: tuple[float, float]
    road_segment: str | None
    vehicles_peak: float
    """Vehicles per 15 minutes at the morning peak."""
    pedestrians_peak: float
    free_speed: float
    sends_identifiers: bool
    """A vendor firmware that also sends MAC addresses (never stored)."""


@dataclass(frozen=True, slots=True)
class Sensor:
    id: str
    kind: str
    """``aq`` (air quality), ``weather`` or ``noise``."""
    location: tuple[float, float]
    traffic_exposure: float
    """0 (park) .. 1 (arterial road): how much traffic drives NO2, PM and noise here."""
    offset: float
    """A small per-site temperature offset (°C): heat island, shade."""
    counter: int


@dataclass(frozen=True, slots=True)
class Resident:
    id: str
    hub: str
    heart_rate: float
    bedtime: float
    wake: float
    naps: bool
    utc_hub: bool
    """This hub's firmware sends UTC ('Z') rather than local time with its offset."""


@dataclass(frozen=True, slots=True)
class CityPlan:
    seed: int
    scale: float
    cabinets: tuple[Cabinet, ...]
    counters: tuple[Counter, ...]
    ul_sensors: tuple[Sensor, ...]
    ttn_sensors: tuple[Sensor, ...]
    stations: tuple[Sensor, ...]
    residents: tuple[Resident, ...]

    @property
    def lamp_count(self) -> int:
        return sum(len(c.lamps) for c in self.cabinets)


def scaled(n: int, scale: float) -> int:
    return max(1, round(n * scale))


def _nearest(point: tuple[float, float], others: list[tuple[float, float]]) -> int:
    return min(range(len(others)), key=lambda i: (others[i][0] - point[0]) ** 2 + (others[i][1] - point[1]) ** 2)


def build_plan(seed: int, scale: float = 1.0) -> CityPlan:
    """The city's devices and residents for ``seed`` at ``scale`` (1.0: the full demo)."""
    if not 0 < scale <= 100:
        raise ValueError("scale must be in (0, 100]")
    rng = random.Random(f"{seed}:plan")
    counters: list[Counter] = []
    for i in range(scaled(12, scale)):
        kind = ("crossing", "road", "crossing", "plaza")[i % 4]
        counters.append(
            Counter(
                id=f"TC-{i + 1:02d}",
                kind=kind,
                location=jitter_point(rng, CENTER, 2500),
                road_segment=f"RS-{STREETS[i % len(STREETS)]}-{i // len(STREETS) + 1:02d}" if kind != "plaza" else None,
                vehicles_peak=rng.uniform(140, 320) if kind == "road" else rng.uniform(40, 110),
                pedestrians_peak=rng.uniform(150, 420) if kind == "plaza" else rng.uniform(30, 120),
                free_speed=rng.uniform(42, 58) if kind == "road" else rng.uniform(28, 38),
                sends_identifiers=i % 5 == 4,
            )
        )
    counter_points = [c.location for c in counters]

    cabinets: list[Cabinet] = []
    for i in range(scaled(24, scale)):
        cab_id = f"CAB-{i + 1:04d}"
        where = jitter_point(rng, CENTER, 3000)
        split = rng.random() < 0.25
        groups = (f"G-{i + 1:04d}-N", f"G-{i + 1:04d}-S") if split else ()
        rated = rng.choice((36.0, 54.0, 54.0, 70.0, 90.0, 120.0))
        lamps = tuple(
            Lamp(
                id=f"L-{i + 1:04d}-{j + 1:02d}",
                location=jitter_point(rng, where, 350),
                group=(groups[j % 2] if split else None),
                rated_w=rated,
                energy_wh=round(rng.uniform(20_000, 600_000), 1),
            )
            for j in range(rng.randint(16, 24))
        )
        mode = "manual" if i % 11 == 10 else ("semiautomatic" if i % 7 == 6 else "automatic")
        cabinets.append(
            Cabinet(cab_id, where, groups, mode, lamps, _nearest(where, counter_points),
                    round(rng.uniform(800, 25_000), 2))
        )

    def sensors(prefix: str, kind: str, n: int) -> tuple[Sensor, ...]:
        out = []
        for i in range(n):
            where = jitter_point(rng, CENTER, 3500)
            street = STREETS[(i * 7 + len(prefix)) % len(STREETS)]
            out.append(
                Sensor(
                    id=f"{prefix}-{street}-{i + 1:02d}",
                    kind=kind,
                    location=where,
                    traffic_exposure=round(rng.uniform(0.15, 1.0), 3),
                    offset=round(rng.uniform(-0.8, 1.2), 2),
                    counter=_nearest(where, counter_points),
                )
            )
        return tuple(out)

    ul = (*sensors("aq", "aq", scaled(10, scale)), *sensors("wx", "weather", scaled(4, scale)),
          *sensors("noise", "noise", scaled(6, scale)))
    ttn = (*sensors("lora-noise", "noise", scaled(10, scale)), *sensors("lora-aq", "aq", scaled(8, scale)))
    stations = tuple(
        Sensor(f"S{i + 1:02d}", "noise", jitter_point(rng, CENTER, 3000), round(rng.uniform(0.2, 1.0), 3), 0.0,
               _nearest(CENTER, counter_points))
        for i in range(scaled(8, scale))
    )
    residents = tuple(
        Resident(
            id=f"R-{rng.randint(10_000, 99_999)}{i % 10}",
            hub=f"H-{1000 + i * 37 + rng.randint(0, 30):04d}",
            heart_rate=rng.uniform(58, 82),
            bedtime=rng.uniform(21.5, 23.5),
            wake=rng.uniform(6.5, 8.5),
            naps=rng.random() < 0.35,
            utc_hub=i % 6 == 5,
        )
        for i in range(scaled(30, scale))
    )
    return CityPlan(seed, scale, tuple(cabinets), tuple(counters), ul, ttn, stations, residents)


# --------------------------------------------------------------------------------------------------
# One day of the city: what every feed shares (sun, traffic counts, weather)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Count:
    """What one counter saw in one slot."""

    pedestrians_in: int
    pedestrians_out: int
    vehicles: dict[str, int]
    speed: float

    @property
    def people(self) -> int:
        return self.pedestrians_in + self.pedestrians_out

    @property
    def vehicle_total(self) -> int:
        return sum(self.vehicles.values())


@dataclass(slots=True)
class CityDay:
    """The shared state of one simulated day."""

    plan: CityPlan
    day: date
    slots: list[datetime]
    sunrise: datetime
    sunset: datetime
    counts: list[list[Count]]
    """``counts[counter][slot]``."""
    t_min: float
    t_max: float
    pressure: float
    wind: float
    extra: dict[str, float] = field(default_factory=dict)

    def activity(self, counter: int, slot: int) -> float:
        """People and vehicles seen by ``counter`` in ``slot``, relative to its evening level (0..~1.5)."""
        c = self.plan.counters[counter]
        seen = self.counts[counter][slot]
        reference = 0.5 * (c.vehicles_peak + c.pedestrians_peak)
        return (seen.vehicle_total + seen.people) / reference

    def traffic(self, counter: int, slot: int) -> float:
        """Vehicles seen relative to the counter's morning peak."""
        c = self.plan.counters[counter]
        return self.counts[counter][slot].vehicle_total / max(c.vehicles_peak, 1.0)

    def traffic_index(self, slot: int) -> float:
        """City-wide vehicle traffic in ``slot`` relative to the morning peak (the mean over road counters)."""
        cached = self.extra.get(f"ti{slot}")
        if cached is None:
            roads = [i for i, c in enumerate(self.plan.counters) if c.kind != "plaza"]
            cached = sum(self.traffic(i, slot) for i in roads) / len(roads) if roads else 0.3
            self.extra[f"ti{slot}"] = cached
        return cached

    def is_dark(self, moment: datetime) -> bool:
        """Lamps burn from a few minutes after sunset to a few minutes before sunrise."""
        return moment <= self.sunrise - timedelta(minutes=5) or moment >= self.sunset + timedelta(minutes=5)

    def temperature(self, moment: datetime, offset: float = 0.0) -> float:
        """Air temperature (°C): lowest at dawn, highest mid-afternoon."""
        low_at = local_hour(self.sunrise) + 0.3
        return self.t_min + offset + (self.t_max - self.t_min) * daily_wave(local_hour(moment), low_at, 15.0)

    def humidity(self, temperature: float) -> float:
        """Relative humidity (%), the inverse of temperature over the day."""
        span = max(self.t_max - self.t_min, 1.0)
        return max(28.0, min(99.0, 94.0 - 48.0 * (temperature - self.t_min) / span))


def simulate_day(plan: CityPlan, day: date) -> CityDay:
    """Sun, weather and every counter's counts for ``day``."""
    rng = random.Random(f"{plan.seed}:{day.isoformat()}:traffic")
    slots = slot_times(day)
    sunrise, sunset = sun_times(day)
    weekday = day.weekday()
    # a season-shaped temperature range for the city (mild winters, hot summers)
    season = math.cos(2 * math.pi * (day.timetuple().tm_yday - 200) / 365)
    t_min = round(9.0 + 8.0 * season + rng.uniform(-2.0, 2.0), 1)
    t_max = round(t_min + rng.uniform(7.0, 11.0), 1)
    counts: list[list[Count]] = []
    for counter in plan.counters:
        row: list[Count] = []
        for moment in slots:
            h = local_hour(moment - SLOT / 2)  # the middle of the interval
            vehicles: dict[str, int] = {}
            if counter.kind != "plaza":
                mean = counter.vehicles_peak * traffic_curve(h, weekday)
                vehicles = {cls: poisson(rng, mean * share) for cls, share in VEHICLE_SHARE.items()}
                if not 6.5 <= h <= 21.5:
                    vehicles["bicycle"] = poisson(rng, mean * 0.01)
            walkers_in = walkers_out = 0
            if counter.kind != "road":
                mean = counter.pedestrians_peak * pedestrian_curve(h, weekday)
                walkers_in = poisson(rng, mean * 0.52)
                walkers_out = poisson(rng, mean * 0.48)
            load = sum(vehicles.values()) / max(counter.vehicles_peak, 1.0)
            speed = round(max(6.0, counter.free_speed * (1 - 0.55 * min(load, 1.2)) + rng.gauss(0, 1.5)), 1)
            row.append(Count(walkers_in, walkers_out, vehicles, speed))
        counts.append(row)
    return CityDay(
        plan=plan, day=day, slots=slots, sunrise=sunrise, sunset=sunset, counts=counts,
        t_min=t_min, t_max=t_max, pressure=rng.uniform(1006, 1024), wind=rng.uniform(1.5, 6.0),
    )
