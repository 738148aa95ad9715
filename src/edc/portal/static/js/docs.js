// The API explorer at /docs, from the vendored swagger-ui (no CDN, no inline script).
window.addEventListener("DOMContentLoaded", () => {
  window.SwaggerUIBundle({
    url: document.getElementById("swagger-ui").dataset.openapiUrl,
    dom_id: "#swagger-ui",
    deepLinking: true,
  });
});
