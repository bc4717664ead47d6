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

  const player = document.getElementById("player");
  if (player) listening(player);

  // Recording page: print it for a referral (the print styles keep the result, the patient and
  // the pictures, and drop the forms and the player).
  const printButton = document.getElementById("print-referral");
  if (printButton) {
    printButton.hidden = false;
    printButton.addEventListener("click", () => window.print());
  }
});

// Recording page: switch the player's filter without losing the place, slow it down, and tie it
// to the pictures (a red line follows the sound; a click on a picture plays from that moment).
function listening(player) {
  const form = document.getElementById("listen-form");
  document.getElementById("listen-apply").hidden = true;  // a choice applies at once
  for (const radio of form.querySelectorAll("input[name=listen]")) {
    radio.addEventListener("change", () => {
      const at = player.currentTime, playing = !player.paused;
      player.addEventListener("loadedmetadata", () => {
        player.currentTime = Math.min(at, player.duration || at);
        if (playing) player.play().catch(() => {});
      }, { once: true });
      player.src = radio.dataset.src;
      history.replaceState(null, "", "?listen=" + encodeURIComponent(radio.value) + "#listen");
    });
  }

  const speed = document.getElementById("speed");
  document.getElementById("speed-control").hidden = false;
  speed.addEventListener("change", () => {
    player.defaultPlaybackRate = player.playbackRate = Number(speed.value);  // default survives a new src
  });

  const timelines = document.querySelectorAll(".timeline");
  const heads = [];
  for (const timeline of timelines) {
    const picture = timeline.querySelector("img"), head = timeline.querySelector(".playhead");
    heads.push(head);
    timeline.classList.add("seekable");
    picture.addEventListener("click", (event) => {
      const box = picture.getBoundingClientRect();
      if (!player.duration || !box.width) return;
      player.currentTime = Math.max(0, Math.min(1, (event.clientX - box.left) / box.width)) * player.duration;
      player.play().catch(() => {});
    });
  }
  document.getElementById("timeline-hint").hidden = false;
  let frame = 0;
  const follow = () => {
    if (player.duration) {
      const percent = (100 * player.currentTime / player.duration).toFixed(3) + "%";
      for (const head of heads) { head.hidden = false; head.style.left = percent; }
    }
    frame = player.paused ? 0 : requestAnimationFrame(follow);
  };
  for (const name of ["play", "seeked", "timeupdate", "loadedmetadata"]) {
    player.addEventListener(name, () => { if (!frame) follow(); });
  }
}

function duration(ms) {
  const minutes = Math.round(Math.abs(ms) / 60000);
  const days = Math.floor(minutes / 1440), hours = Math.floor((minutes % 1440) / 60);
  if (days) return days + " d" + (hours ? " " + hours + " h" : "");
  if (hours) return hours + " h" + (minutes % 60 ? " " + (minutes % 60) + " min" : "");
  return minutes + " min";
}
