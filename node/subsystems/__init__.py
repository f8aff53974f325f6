"""The node's subsystems, one module each; they meet each other only through topics."""
