// HeartPi: small progressive enhancements only; every page works without JavaScript.
document.addEventListener("DOMContentLoaded", () => {
  // Disable submit buttons of upload forms while the file is sent and analysed.
  for (const form of document.querySelectorAll("form[enctype='multipart/form-data']")) {
    form.addEventListener("submit", () => {
      for (const b of form.querySelectorAll("button[type=submit]")) { b.disabled = true; b.textContent = "Analysing…"; }
    });
  }

  // Device page: compare the device clock with this computer's, and send this computer's time.
  const deviceClock = document.getElementById("device-clock");
  if (deviceClock) {
    const offsetMs = Date.now() - Number(deviceClock.dataset.epochMs);
    const browserClock = document.getElementById("browser-clock");
    browserClock.textContent = "(this computer: " + new Date().toISOString().slice(0, 19).replace("T", " ") + " UTC)";
    browserClock.hidden = false;
    if (Math.abs(offsetMs) > 120000) {
      const mismatch = document.getElementById("clock-mismatch");
      mismatch.textContent = "The device clock is " + duration(offsetMs) + (offsetMs > 0 ? " behind" : " ahead of") +
        " this computer's. New recordings get wrong dates until it is set.";
      mismatch.hidden = false;
    }
  }
  const clockForm = document.getElementById("clock-form");
  if (clockForm) {
    document.getElementById("clock-typed").hidden = true;  // the browser's own time is sent instead
    clockForm.addEventListener("submit", () => { clockForm.elements.browser_epoch_ms.value = String(Date.now()); });
  }
});

function duration(ms) {
  const minutes = Math.round(Math.abs(ms) / 60000);
  const days = Math.floor(minutes / 1440), hours = Math.floor((minutes % 1440) / 60);
  if (days) return days + " d" + (hours ? " " + hours + " h" : "");
  if (hours) return hours + " h" + (minutes % 60 ? " " + (minutes % 60) + " min" : "");
  return minutes + " min";
}
