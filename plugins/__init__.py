"""diffkit's built-in plugins, registered through diffkit's own entry points like any third party's."""
