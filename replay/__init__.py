"""replay: replay memory for agents that learn to drive from full-resolution pixels."""
