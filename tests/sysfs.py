"""A sysfs tree laid out as a Raspberry Pi's, for the power-supply tests and tools/bench_device.py."""

from __future__ import annotations

from pathlib import Path


def fake_sysfs(root: Path, *, with_sensor: bool = True, alarm: str = "0") -> Path:
    """``/sys/class/hwmon`` as on a Raspberry Pi 4: symlinks into ``/sys/devices``, the SoC's
    thermal sensor first, the firmware's voltage sensor second (when ``with_sensor``)."""
    hwmon = root / "class" / "hwmon"
    hwmon.mkdir(parents=True)
    devices = [("hwmon0", "devices/virtual/thermal/thermal_zone0/hwmon0", "cpu_thermal")]
    if with_sensor:
        devices.append(("hwmon1", "devices/platform/soc/soc:firmware/raspberrypi-hwmon/hwmon/hwmon1", "rpi_volt"))
    for link, target, name in devices:
        real = root / target
        real.mkdir(parents=True)
        (real / "name").write_text(name + "\n")
        (hwmon / link).symlink_to(real)
    if with_sensor:
        (hwmon / "hwmon1" / "in0_lcrit_alarm").write_text(alarm + "\n")
        return hwmon / "hwmon1" / "in0_lcrit_alarm"
    (hwmon / "hwmon0" / "temp1_input").write_text("48000\n")
    return hwmon
