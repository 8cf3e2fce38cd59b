// Starts Swagger UI on the API docs page (gateway/docs.html) over the OpenAPI document of
// this host. A file of its own, not an inline script, so that the page's
// Content-Security-Policy can allow scripts from this host only.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/api/openapi.json",
    dom_id: "#swagger-ui",
    // Every operation listed at once, each with its operationId, so that a reader finds a
    // call by its path or its name.
    docExpansion: "list",
    displayOperationId: true,
    deepLinking: true,
    // Swagger UI would send the document to validator.swagger.io for a badge otherwise.
    validatorUrl: null,
  });
});
