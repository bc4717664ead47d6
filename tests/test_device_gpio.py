"""LED patterns and button semantics with gpiozero's MockFactory pins."""

from __future__ import annotations

import time

import pytest

from device import gpio


@pytest.fixture
def indicator(mock_factory):
    ind = gpio.Indicator(button_pin=17, green_pin=27, red_pin=22, amber_pin=23, long_press_seconds=0.3,
                         pin_factory=mock_factory)
    yield ind
    ind.close()


def pin(factory, number):
    return factory.pin(number)


@pytest.mark.parametrize("state,lit", [(gpio.NORMAL, 27), (gpio.ABNORMAL, 22), (gpio.POOR_SIGNAL, 23)])
def test_result_states_light_one_steady_led(indicator, mock_factory, state, lit):
    indicator.show(state)
    time.sleep(0.05)
    for number in (27, 22, 23):
        assert pin(mock_factory, number).state == (number == lit)


def test_off_turns_everything_off(indicator, mock_factory):
    indicator.show(gpio.ABNORMAL)
    indicator.show(gpio.OFF)
    assert not any(pin(mock_factory, n).state for n in (27, 22, 23))


def test_recording_blinks_green_once_a_second(indicator, mock_factory):
    green = pin(mock_factory, 27)
    green.clear_states()
    indicator.show(gpio.RECORDING)
    time.sleep(1.15)
    indicator.show(gpio.OFF)
    green.assert_states_and_times([(0.0, False), (0.0, True), (0.5, False), (0.5, True), (0.15, False)])


def test_fault_blinks_red_fast(indicator, mock_factory):
    red = pin(mock_factory, 22)
    red.clear_states()
    indicator.show(gpio.FAULT)
    time.sleep(0.5)
    indicator.show(gpio.OFF)
    red.assert_states_and_times([(0.0, False), (0.0, True), (0.2, False), (0.2, True), (0.1, False)])


def test_every_state_has_words_for_the_health_worker():
    for state, (pattern, meaning) in gpio.PATTERNS.items():
        assert meaning and (pattern is None) == (state == gpio.OFF)


def test_short_press_acts_on_release_and_long_press_cancels(indicator, mock_factory):
    events = []
    indicator.on_press = lambda: events.append("press")
    indicator.on_long_press = lambda: events.append("hold")
    button = pin(mock_factory, 17)
    button.drive_low()
    assert events == []  # nothing until release
    button.drive_high()
    time.sleep(0.05)
    assert events == ["press"]
    button.drive_low()
    time.sleep(0.5)
    button.drive_high()
    time.sleep(0.05)
    assert events == ["press", "hold"]  # a long press is never also a press


def test_unknown_state_is_refused(indicator):
    with pytest.raises(ValueError):
        indicator.show("disco")
