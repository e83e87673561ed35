// Starts Swagger UI on the docs page (app/web/docs.py). A served file rather than an inline
// script, so that the page's Content-Security-Policy can allow scripts from 'self' only.
"use strict";
window.addEventListener("DOMContentLoaded", function () {
  const page = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: page.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    presets: [SwaggerUIBundle.presets.apis],
  });
});
