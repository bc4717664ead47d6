// HeartPi: small progressive enhancements only; every page works without JavaScript.
document.addEventListener("DOMContentLoaded", () => {
  // Disable submit buttons of upload forms while the file is sent and analysed.
  for (const form of document.querySelectorAll("form[enctype='multipart/form-data']")) {
    form.addEventListener("submit", () => {
      for (const b of form.querySelectorAll("button[type=submit]")) { b.disabled = true; b.textContent = "Analysing…"; }
    });
  }
});
