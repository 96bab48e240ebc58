"""Monitoring module feeds: UltraLight sensors, LoRaWAN uplinks (The Things Stack v3), a department CSV.

The environment follows the day: temperature lowest at dawn and highest mid-afternoon, humidity the
other way round, NO2 and particles with the rush hours (and a morning inversion), noise with traffic.
"""

from __future__ import annotations

import base64
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from governance.demo.city import SLOT, ZONE, ZONE_NAME, CityDay, CityPlan, Sensor, local_hour
from governance.demo.feeds import Capture, CsvRow, Defect, Feed, Item, iso_ms, redelivered, truncated_payload


@dataclass(frozen=True, slots=True)
class Air:
    """The environment at one sensor at one moment, in the units sensors usually send."""

    temperature: float
    humidity: float
    """Percent."""
    pressure: float
    wind_kmh: float
    wind_dir: float
    pm25: float
    pm10: float
    no2: float
    laeq: float
    lamax: float
    las: float


def environment(city: CityDay, sensor: Sensor, slot: int, moment: datetime, rng: random.Random) -> Air:
    h = local_hour(moment)
    local = city.traffic(sensor.counter, slot) if city.plan.counters[sensor.counter].kind != "plaza" else None
    ti = city.traffic_index(slot) if local is None else 0.5 * local + 0.5 * city.traffic_index(slot)
    e = sensor.traffic_exposure
    temperature = city.temperature(moment, sensor.offset) + rng.gauss(0, 0.15)
    inversion = math.exp(-(((h - 8.0) / 2.0) ** 2) / 2)
    pm25 = max(1.0, 5.0 + 13.0 * e * ti + 5.0 * inversion + rng.gauss(0, 0.8))
    laeq = 38.0 + 8.0 * e + 18.0 * math.log10(1 + 20.0 * e * ti) + rng.gauss(0, 0.8)
    return Air(
        temperature=temperature,
        humidity=max(20.0, min(100.0, city.humidity(temperature) + rng.gauss(0, 1.2))),
        pressure=city.pressure + 1.5 * math.sin(2 * math.pi * slot / 96) + rng.gauss(0, 0.08),
        wind_kmh=max(0.0, 3.6 * city.wind * (0.6 + 0.8 * math.sin(math.pi * min(max(h - 6, 0), 14) / 14))
                     + rng.gauss(0, 1.0)),
        wind_dir=(225 + rng.gauss(0, 25)) % 360,
        pm25=pm25,
        pm10=pm25 * rng.uniform(1.45, 1.8),
        no2=max(2.0, 12.0 + 75.0 * e * ti + 8.0 * inversion + rng.gauss(0, 2.0)),
        laeq=laeq,
        lamax=laeq + rng.uniform(7, 18),
        las=laeq - rng.uniform(0.8, 3.0),
    )


def _local(moment: datetime) -> str:
    return moment.astimezone(ZONE).replace(tzinfo=None).isoformat(timespec="seconds")


def _unit(code: str) -> dict[str, Any]:
    return {"unitCode": {"type": "Text", "value": code}}


def _location(sensor: Sensor) -> dict[str, Any]:
    return {"name": "location", "type": "geo:json", "value": {"type": "Point", "coordinates": list(sensor.location)}}


# --------------------------------------------------------------------------------------------------
# UltraLight 2.0
# --------------------------------------------------------------------------------------------------

AQ_KEY, NOISE_KEY, WEATHER_KEY = "a1rq7d2k5m", "n0i5e8lv3q", "w3ath3r9x1"
_UL_KEYS = {"aq": AQ_KEY, "noise": NOISE_KEY, "weather": WEATHER_KEY}


class UltraLightFeed(Feed):
    """Air-quality, noise and weather stations publishing ``k|v|k|v`` measures every 15 minutes."""

    adapter = "ultralight"
    input_name = "ul-measures.jsonl"
    config_name = "provisioning.json"

    def config(self) -> dict[str, Any]:
        def attr(object_id: str, name: str, unit: str | None = None, kind: str = "Number") -> dict[str, Any]:
            out: dict[str, Any] = {"object_id": object_id, "name": name, "type": kind}
            if unit:
                out["metadata"] = _unit(unit)
            return out

        services = [
            {"apikey": AQ_KEY, "entity_type": "AirQualityObserved", "resource": "/iot/d", "protocol": "IoTA-UL",
             "transport": "MQTT", "cbroker": "http://orion:1026",
             "attributes": [attr("t", "temperature", "CEL"), attr("h", "relativeHumidity", "P1"),
                            attr("pm25", "pm25", "GQ"), attr("pm10", "pm10", "GQ"), attr("no2", "no2", "GQ")],
             "static_attributes": [{"name": "typeofLocation", "type": "Text", "value": "outdoor"},
                                   {"name": "dataProvider", "type": "Text", "value": "city-environment"}]},
            {"apikey": NOISE_KEY, "entity_type": "NoiseLevelObserved", "resource": "/iot/d",
             "observation_window": {"seconds": 900, "time_marks": "end"},
             "attributes": [attr("laeq", "LAeq", "2N"), attr("lamax", "LAmax", "2N"), attr("las", "LAS", "2N")]},
            {"apikey": WEATHER_KEY, "entity_type": "WeatherObserved", "resource": "/iot/d", "timezone": ZONE_NAME,
             "attributes": [attr("ts", "TimeInstant", kind="DateTime"), attr("tf", "temperature", "FAH"),
                            attr("h", "relativeHumidity", "P1"), attr("p", "atmosphericPressure", "A97"),
                            attr("ws", "windSpeed", "KMH"), attr("wd", "windDirection", "DD")]},
        ]
        devices = []
        for sensor in self.plan.ul_sensors:
            title = sensor.id.replace("-", " ").title()
            statics = [_location(sensor), {"name": "name", "type": "Text", "value": title}]
            if sensor.kind == "noise":
                statics.append({"name": "sonometerClass", "type": "Text", "value": "1"})
            devices.append({"device_id": sensor.id, "apikey": _UL_KEYS[sensor.kind], "static_attributes": statics})
        return {"services": services, "devices": devices}

    def day(self, city: CityDay, rng: random.Random) -> list[Item]:
        out: list[Item] = []
        for slot, moment in enumerate(city.slots):
            for index, sensor in enumerate(self.plan.ul_sensors):
                sent = moment + timedelta(seconds=10 + (index * 7) % 50, milliseconds=rng.randint(0, 999))
                air = environment(city, sensor, slot, sent, rng)
                if sensor.kind == "aq":
                    text = (f"t|{air.temperature:.1f}|h|{air.humidity:.0f}|pm25|{air.pm25:.1f}"
                            f"|pm10|{air.pm10:.1f}|no2|{air.no2:.0f}")
                elif sensor.kind == "noise":  # the window's end as a leading UTC timestamp
                    text = f"{iso_ms(moment)}|laeq|{air.laeq:.1f}|lamax|{air.lamax:.1f}|las|{air.las:.1f}"
                else:
                    fahrenheit = air.temperature * 9 / 5 + 32
                    text = (f"ts|{_local(moment)}|tf|{fahrenheit:.1f}|h|{air.humidity:.0f}|p|{air.pressure:.1f}"
                            f"|ws|{air.wind_kmh:.1f}|wd|{air.wind_dir:.0f}")
                topic = f"/ul/{_UL_KEYS[sensor.kind]}/{sensor.id}/attrs"
                out.append(Capture(topic, text, sent + timedelta(milliseconds=rng.randint(20, 400))))
        return out

    def defects(self) -> Sequence[Defect]:
        return (
            Defect("unknown_apikey", "unknown_apikey", _ul_topic(lambda key, dev: f"/ul/zz9unkn0wn/{dev}/attrs")),
            Defect("unknown_device", "unknown_device", _ul_topic(lambda key, dev: f"/ul/{key}/aq-ghost-99/attrs")),
            Defect("latin1_bytes", "not_utf8", _ul_text(lambda t: t.encode("utf-8") + b"|loc|Pla\xe7a")),
            Defect("word_for_number", "wrong_type", _ul_text(_first_value("err"))),
            Defect("humidity_over_100", "out_of_range", _ul_text(
                lambda t: t.replace("|h|", "|h|1", 1) if "|h|" in t else t.replace("|laeq|", "|laeq|2", 1))),
            Defect("dangling_key", "ul_syntax", _ul_text(lambda t: None if t[:1].isdigit() else t + "|h")),
            Defect("unprovisioned_measure", "unknown_attribute", _ul_text(lambda t: t + "|co2|415")),
            Defect("local_time_no_zone", "timestamp_without_zone", _ul_no_zone),
            Defect("redelivery", None, redelivered, limit=2),
        )


def _ul_topic(change: Any) -> Any:
    def apply(item: Item, _rng: random.Random) -> list[Item] | None:
        if not isinstance(item, Capture) or not item.topic or not isinstance(item.payload, str):
            return None
        _, _, key, device, _ = item.topic.split("/")
        return [replace(item, topic=change(key, device))]

    return apply


def _ul_text(change: Any) -> Any:
    def apply(item: Item, _rng: random.Random) -> list[Item] | None:
        if not isinstance(item, Capture) or not isinstance(item.payload, str):
            return None
        new = change(item.payload)
        return None if new is None else [replace(item, payload=new)]

    return apply


def _first_value(word: str) -> Any:
    def change(text: str) -> str:
        fields = text.split("|")
        index = 1 if len(fields) % 2 == 0 else 2  # after a leading timestamp
        if fields[index - 1] == "ts":
            index += 2  # the TimeInstant measure: the next one is a number
        fields[index] = word
        return "|".join(fields)

    return change


def _ul_no_zone(item: Item, _rng: random.Random) -> list[Item] | None:
    """A device of a group without a time zone that starts sending local timestamps."""
    if not isinstance(item, Capture) or not isinstance(item.payload, str) or AQ_KEY not in (item.topic or ""):
        return None
    stamp = item.received_at.astimezone(ZONE).replace(tzinfo=None, microsecond=0).isoformat()
    return [replace(item, payload=f"{stamp}|{item.payload}")]


# --------------------------------------------------------------------------------------------------
# The Things Stack v3
# --------------------------------------------------------------------------------------------------

GATEWAYS = (("gw-ayuntamiento", "B827EBFFFE61A0C1"), ("gw-mercado", "B827EBFFFE61A0C2"),
            ("gw-estacion", "B827EBFFFE61A0C3"), ("gw-hospital", "B827EBFFFE61A0C4"))


def _ns(moment: datetime, rng: random.Random) -> str:
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond * 1000 + rng.randint(0, 999):09d}Z"


class TtnFeed(Feed):
    """LoRaWAN noise (every 15 min) and air-quality (every 30 min) sensors, as TTS v3 uplinks."""

    adapter = "ttn-v3"
    input_name = "ttn-uplinks.jsonl"
    config_name = "ttn-devices.json"

    def __init__(self, plan: CityPlan, *, max_payload_bytes: int = 256 * 1024) -> None:
        super().__init__(plan, max_payload_bytes=max_payload_bytes)
        self.f_cnt = {s.id: 100 + 37 * i for i, s in enumerate(plan.ttn_sensors)}
        self.battery = {s.id: 3.55 - 0.02 * (i % 9) for i, s in enumerate(plan.ttn_sensors)}

    def config(self) -> dict[str, Any]:
        noise_kit = {
            "fields": {
                "leq": {"entity_type": "NoiseLevelObserved", "property": "LAeq", "unit": "2N"},
                "lmax": {"entity_type": "NoiseLevelObserved", "property": "LAmax", "unit": "2N"},
                "interval_min": {"entity_type": "NoiseLevelObserved", "property": "observationPeriod", "unit": "MIN"},
                "bat_v": {"entity_type": "Device", "property": "batteryLevel", "unit": "VLT",
                          "voltage_range": [3.0, 3.6]},
            },
            "ignore": ["status"],
        }
        devices: dict[str, Any] = {}
        for sensor in self.plan.ttn_sensors:
            settings: dict[str, Any] = {"location": list(sensor.location)}
            if sensor.kind == "noise":
                settings["profile"] = "noise-kit"
            devices[sensor.id] = settings
        return {"applications": ["city-noise", "city-air-quality"], "profiles": {"noise-kit": noise_kit},
                "devices": devices, "unknown_devices": "reject"}

    def day(self, city: CityDay, rng: random.Random) -> list[Item]:
        out: list[Item] = []
        for slot, moment in enumerate(city.slots):
            for index, sensor in enumerate(self.plan.ttn_sensors):
                if sensor.kind == "aq" and slot % 2 == 0:
                    continue  # air-quality nodes report every 30 minutes
                sent = moment + timedelta(seconds=(index * 13) % 60, milliseconds=rng.randint(0, 999))
                air = environment(city, sensor, slot, sent, rng)
                self.battery[sensor.id] = max(3.05, self.battery[sensor.id] - rng.uniform(0, 0.0004))
                if sensor.kind == "noise":
                    decoded: dict[str, Any] = {"leq": round(air.laeq, 1), "lmax": round(air.lamax, 1),
                                               "interval_min": 15, "bat_v": round(self.battery[sensor.id], 2),
                                               "status": 0}
                    app, port = "city-noise", 3
                else:
                    decoded = {"pm2_5": round(air.pm25, 1), "pm10": round(air.pm10, 1), "no2": round(air.no2),
                               "temperature": round(air.temperature, 1), "humidity": round(air.humidity),
                               "pressure": round(air.pressure, 1),
                               "battery": round((self.battery[sensor.id] - 3.0) / 0.006)}
                    app, port = "city-air-quality", 2
                out.append(self._uplink(sensor, index, app, port, sent, decoded, rng))
        return out

    def _uplink(self, sensor: Sensor, index: int, app: str, port: int, sent: datetime,
                decoded: dict[str, Any], rng: random.Random) -> Capture:
        self.f_cnt[sensor.id] += 1
        heard_at = sent + timedelta(milliseconds=rng.randint(30, 60))
        received = heard_at + timedelta(milliseconds=rng.randint(20, 300))
        gateways = rng.sample(GATEWAYS, rng.randint(1, 3))
        rx = []
        for gw_id, eui in gateways:
            rssi = rng.randint(-118, -70)
            rx.append({"gateway_ids": {"gateway_id": gw_id, "eui": eui}, "time": _ns(sent, rng),
                       "timestamp": rng.randrange(2**32), "rssi": rssi, "channel_rssi": rssi,
                       "snr": round(rng.uniform(-12, 11), 1)})
        uplink = {
            "end_device_ids": {"device_id": sensor.id, "application_ids": {"application_id": app},
                               "dev_eui": f"70B3D57ED005{index:04X}", "join_eui": "0000000000000000",
                               "dev_addr": f"260B{index:04X}"},
            "correlation_ids": [f"gs:uplink:{rng.getrandbits(96):024X}"],
            "received_at": _ns(received, rng),
            "uplink_message": {
                "session_key_id": base64.b64encode(rng.randbytes(16)).decode("ascii"),
                "f_port": port, "f_cnt": self.f_cnt[sensor.id],
                "frm_payload": base64.b64encode(rng.randbytes(11 if port == 2 else 7)).decode("ascii"),
                "decoded_payload": decoded,
                "rx_metadata": rx,
                "settings": {"data_rate": {"lora": {"bandwidth": 125000, "spreading_factor": rng.choice((7, 8, 9, 10)),
                                                    "coding_rate": "4/5"}}, "frequency": "868100000"},
                "received_at": _ns(heard_at, rng),
                "consumed_airtime": "0.205824s",
                "network_ids": {"net_id": "000013", "tenant_id": "ttn", "cluster_id": "eu1",
                                "cluster_address": "eu1.cloud.thethings.network"},
            },
        }
        topic = f"v3/{app}@ttn/devices/{sensor.id}/up"
        return Capture(topic, uplink, received + timedelta(milliseconds=rng.randint(5, 80)))

    def defects(self) -> Sequence[Defect]:
        return (
            Defect("join_accept", "not_an_uplink", _join_accept),
            Defect("no_formatter", "no_decoded_payload", _uplink_edit(lambda up: {
                k: v for k, v in up.items() if k != "decoded_payload"})),
            Defect("reading_as_string", "wrong_type", _decoded_edit(
                lambda d: {k: str(v) if i == 0 else v for i, (k, v) in enumerate(d.items())})),
            Defect("implausible_level", "quality_check", _decoded_edit(
                lambda d: {**d, "leq": 163.0, "lmax": 171.5} if "leq" in d else {**d, "pm2_5": 1450.0})),
            Defect("unregistered_device", "unknown_device", _unregistered),
            Defect("no_received_at", "missing_field", _payload_edit(
                lambda doc: {k: v for k, v in doc.items() if k != "received_at"})),
            Defect("truncated_payload", "invalid_json", truncated_payload),
            Defect("redelivery", None, redelivered, limit=2),
        )


def _payload_edit(change: Any) -> Any:
    def apply(item: Item, _rng: random.Random) -> list[Item] | None:
        if not isinstance(item, Capture) or not isinstance(item.payload, dict):
            return None
        return [replace(item, payload=change(item.payload))]

    return apply


def _uplink_edit(change: Any) -> Any:
    return _payload_edit(lambda doc: {**doc, "uplink_message": change(doc["uplink_message"])})


def _decoded_edit(change: Any) -> Any:
    return _uplink_edit(lambda up: {**up, "decoded_payload": change(up["decoded_payload"])})


def _join_accept(item: Item, _rng: random.Random) -> list[Item] | None:
    if not isinstance(item, Capture) or not isinstance(item.payload, dict) or not item.topic:
        return None
    doc = item.payload
    up = doc["uplink_message"]
    join = {"end_device_ids": doc["end_device_ids"], "correlation_ids": doc["correlation_ids"],
            "received_at": doc["received_at"],
            "join_accept": {"session_key_id": up["session_key_id"], "received_at": up["received_at"]}}
    return [replace(item, topic=item.topic.removesuffix("/up") + "/join", payload=join)]


def _unregistered(item: Item, _rng: random.Random) -> list[Item] | None:
    if not isinstance(item, Capture) or not isinstance(item.payload, dict) or not item.topic:
        return None
    doc = item.payload
    ids = {**doc["end_device_ids"], "device_id": "lora-test-99"}
    app = ids["application_ids"]["application_id"]
    return [replace(item, topic=f"v3/{app}@ttn/devices/lora-test-99/up", payload={**doc, "end_device_ids": ids})]


# --------------------------------------------------------------------------------------------------
# Department CSV: the environment department's hourly noise survey
# --------------------------------------------------------------------------------------------------

CSV_HEADER = ("Estación", "Fecha", "Hora", "LAeq (dB)", "LAmax (dB)", "LAS (dB)", "Observaciones")
NOTES = ("", "", "", "", "", "", "", "", "obras; calle cortada", "tráfico denso", "carga y descarga",
         "lluvia ligera", "nota en dos líneas:\nrevisar micrófono")


def _comma(value: float) -> str:
    return f"{value:.1f}".replace(".", ",")


class DepartmentCsvFeed(Feed):
    """One row per station and hour; ``;`` separators, decimal commas, a UTF-8 BOM."""

    adapter = "department-csv"
    input_name = "noise-survey.csv"
    config_name = "noise-survey-mapping.json"
    csv = True
    header = ";".join(CSV_HEADER)

    def config(self) -> dict[str, Any]:
        return {
            "entity_type": "NoiseLevelObserved",
            "id_column": "station",
            "id_prefix": "env-survey-",
            "time": {"column": ["Fecha", "Hora"], "format": "%d/%m/%Y %H:%M", "zone": ZONE_NAME,
                     "column_marks": "start"},
            "interval_minutes": 60,
            "separator": ";",
            "decimal": ",",
            "encoding": "utf-8",
            "columns": {
                "LAeq": {"property": "LAeq", "unit": "2N"},
                "LAmax": {"property": "LAmax", "unit": "2N"},
                "LAS": {"property": "LAS", "unit": "2N", "required": False},
            },
            "header_aliases": {"Estación": "station", "LAeq (dB)": "LAeq", "LAmax (dB)": "LAmax", "LAS (dB)": "LAS"},
            "location": {"stations": {s.id: list(s.location) for s in self.plan.stations}},
            "null_markers": ["-", "n/d"],
        }

    def day(self, city: CityDay, rng: random.Random) -> list[Item]:
        out: list[Item] = []
        for index, station in enumerate(self.plan.stations):
            quote_numbers = index % 3 == 1  # this station's logger quotes its numbers
            for first in range(0, len(city.slots), 4):
                hour = city.slots[first] - SLOT
                # the hourly level is the energy mean of its quarter hours
                levels = [environment(city, station, q, city.slots[q], rng)
                          for q in range(first, min(first + 4, len(city.slots)))]
                laeq = 10 * math.log10(sum(10 ** (a.laeq / 10) for a in levels) / len(levels))
                lamax = max(a.lamax for a in levels)
                las = "-" if rng.random() < 0.04 else _comma(min(a.las for a in levels))
                local = hour.astimezone(ZONE)
                cells = (station.id, local.strftime("%d/%m/%Y"), local.strftime("%H:%M"), _comma(laeq),
                         _comma(lamax), las, rng.choice(NOTES))
                out.append(CsvRow(cells, frozenset({3, 4, 5}) if quote_numbers else frozenset()))
        return out

    def defects(self) -> Sequence[Defect]:
        return (
            Defect("short_row", "csv_field_count", _cells(lambda c: c[:5])),
            Defect("decimal_point", "wrong_type", _cells(lambda c: (*c[:3], c[3].replace(",", "."), *c[4:])
                                                           if "," in c[3] else None)),
            Defect("latin1_note", "not_utf8", _latin1_row),
            Defect("empty_laeq", "missing_field", _cells(lambda c: (*c[:3], "", *c[4:6], "sensor en mantenimiento"))),
            Defect("unknown_station", "unknown_station", _cells(lambda c: ("S99", *c[1:]))),
            Defect("impossible_date", "invalid_timestamp", _cells(lambda c: (c[0], "31/11/" + c[1][-4:], *c[2:]))),
            Defect("redelivery", None, redelivered, limit=1),
        )


def _cells(change: Any) -> Any:
    def apply(item: Item, _rng: random.Random) -> list[Item] | None:
        if not isinstance(item, CsvRow) or item.raw is not None:
            return None
        new = change(item.cells)
        return None if new is None else [CsvRow(tuple(new), item.quoted)]

    return apply


def _latin1_row(item: Item, _rng: random.Random) -> list[Item] | None:
    if not isinstance(item, CsvRow) or item.raw is not None:
        return None
    row = CsvRow((*item.cells[:6], "tráfico denso"), item.quoted)
    return [CsvRow(raw=row.encode().decode("utf-8").encode("latin-1"))]
