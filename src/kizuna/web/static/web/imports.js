// The CSV import form (web/imports/index.html).
// A second click while a large file is still uploading would send it again. The server
// turns away a form it has already taken, but only once the first upload has made its run.
(function () {
  const form = document.getElementById("import-form");
  const button = document.getElementById("import-submit");
  form.addEventListener("submit", function () {
    button.disabled = true;
    button.textContent = "送信しています…";
  });
  // Back to this page from the run's page: the browser may show it as it was left.
  window.addEventListener("pageshow", function () {
    button.disabled = false;
    button.textContent = "取り込みを始める";
  });
})();
